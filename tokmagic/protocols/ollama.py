"""Ollama's native API (/api/chat, /api/generate, /api/embed). It streams by default, as
newline-delimited JSON; only the final line (done: true) carries the counts."""
from __future__ import annotations

from typing import Any

from ..records import Usage
from .base import Protocol, Reading, StreamReader, as_int, counts, loads


def _read_line(obj: Any, r: Reading) -> None:
    if not isinstance(obj, dict):
        return
    r.model = obj.get("model") or r.model
    message = obj.get("message") or {}
    for text in (message.get("content"), message.get("thinking"), obj.get("response"), obj.get("thinking")):
        if isinstance(text, str):
            r.output_text.append(text)
    if counts(obj, "prompt_eval_count", "eval_count"):
        r.usage = Usage(input_tokens=as_int(obj.get("prompt_eval_count")),
                        output_tokens=as_int(obj.get("eval_count")))
    if obj.get("done"):
        r.complete = True
    if obj.get("error"):
        r.error = str(obj["error"])


class NativeStream(StreamReader):
    def event(self, name: str | None, data: str) -> None:
        _read_line(loads(data), self.reading)


class Native(Protocol):
    vendor = "ollama"
    framing = "ndjson"
    request_keys = ("model",)  # every native request names its model

    def __init__(self, api: str) -> None:
        self.api = api

    def read_body(self, body: Any) -> Reading | None:
        if not isinstance(body, dict):
            return None
        r = Reading(complete=True)
        _read_line(body, r)
        if r.usage is not None:
            r.output_text.clear()
        return r

    def stream_reader(self) -> StreamReader:
        return NativeStream()

    def estimate_input(self, request: dict, count) -> tuple[int, bool]:
        texts = [request.get("prompt"), request.get("system")]
        texts += [m.get("content") for m in request.get("messages") or () if isinstance(m, dict)]
        inputs = request.get("input")
        texts += inputs if isinstance(inputs, list) else [inputs]
        return sum(count(t) for t in texts if isinstance(t, str)), not any(
            m.get("images") for m in request.get("messages") or () if isinstance(m, dict))


CHAT, GENERATE, EMBED = Native("ollama_chat"), Native("ollama_generate"), Native("ollama_embed")
