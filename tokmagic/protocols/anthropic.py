"""Anthropic's Messages API. Its input_tokens exclude cache reads and writes, so they are
added back here to fit the inclusive convention; in a stream the input arrives in
message_start and the final, cumulative output count in the last message_delta."""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ..records import Usage
from . import images
from .base import Protocol, Reading, StreamReader, as_int, counts, loads


def messages_usage(u: Any) -> Usage | None:
    if not counts(u, "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        return None
    read = as_int(u.get("cache_read_input_tokens"))
    write = as_int(u.get("cache_creation_input_tokens"))
    return Usage(input_tokens=as_int(u.get("input_tokens")) + read + write,
                 cached_input_tokens=read, cache_write_tokens=write,
                 output_tokens=as_int(u.get("output_tokens")))


def _block_text(block: Any, out: list[str]) -> None:
    if not isinstance(block, dict):
        return
    for key in ("text", "thinking", "partial_json", "name"):
        if isinstance(block.get(key), str):
            out.append(block[key])
    if isinstance(block.get("input"), dict) and block["input"]:
        out.append(json.dumps(block["input"]))


class MessagesStream(StreamReader):
    def event(self, name: str | None, data: str) -> None:
        self.read(loads(data), name)

    def read(self, event: dict, name: str | None = None) -> None:
        """One event, already decoded (Bedrock delivers them inside its own framing)."""
        r = self.reading
        kind = event.get("type") or name
        if kind == "content_block_delta":
            _block_text(event.get("delta"), r.output_text)
        elif kind == "content_block_start":
            _block_text(event.get("content_block"), r.output_text)
        elif kind == "message_start":
            message = event.get("message") or {}
            r.model = message.get("model") or r.model
            r.usage = messages_usage(message.get("usage"))
            r.output_final = False  # its output_tokens is a placeholder
        elif kind == "message_delta":
            delta = event.get("usage")
            if not isinstance(delta, dict) or delta.get("output_tokens") is None:
                return  # no final count here: the output stays to be estimated
            base = r.usage or Usage()
            if any(k in delta for k in ("input_tokens", "cache_read_input_tokens",
                                         "cache_creation_input_tokens")):
                # newer API versions repeat the (cumulative) input fields here
                merged = messages_usage({**{"input_tokens": base.input_tokens - base.cached_input_tokens
                                            - base.cache_write_tokens,
                                            "cache_read_input_tokens": base.cached_input_tokens,
                                            "cache_creation_input_tokens": base.cache_write_tokens}, **delta})
                base = merged or base
            base.output_tokens = as_int(delta.get("output_tokens"))
            r.usage, r.output_final = base, True
        elif kind == "message_stop":
            r.complete = True
        elif kind == "error":
            r.error = str((event.get("error") or {}).get("message") or event)


def _content_tokens(content: Any, count) -> tuple[int, bool]:
    if isinstance(content, str):
        return count(content), True
    n, whole = 0, True
    for block in content or ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            n += count(block.get("text") or "")
        elif kind == "image":
            source = block.get("source") or {}
            size = None
            if source.get("type") == "base64":
                try:
                    size = images.image_size(base64.b64decode((source.get("data") or "")[:4096]))
                except (binascii.Error, ValueError):
                    size = None
            if size is None:
                whole = False
            else:
                n += images.anthropic_image_tokens(*size)
        elif kind in ("tool_use", "tool_result"):
            inner = block.get("content")
            n += count(json.dumps(block.get("input") or {})) if kind == "tool_use" else 0
            if inner is not None:
                more, ok = _content_tokens(inner, count)
                n, whole = n + more, whole and ok
        else:
            whole = False
    return n, whole


class Messages(Protocol):
    vendor, api = "anthropic", "messages"
    request_keys = ("messages",)

    def read_body(self, body: Any) -> Reading | None:
        if not isinstance(body, dict):
            return None
        r = Reading(model=body.get("model"), usage=messages_usage(body.get("usage")), complete=True)
        if r.usage is None:
            for block in body.get("content") or ():
                _block_text(block, r.output_text)
        return r

    def stream_reader(self) -> StreamReader:
        return MessagesStream()

    def estimate_input(self, request: dict, count) -> tuple[int, bool]:
        n, whole = _content_tokens(request.get("system") or "", count)
        for msg in request.get("messages") or ():
            if isinstance(msg, dict):
                tokens, ok = _content_tokens(msg.get("content"), count)
                n, whole = n + 3 + tokens, whole and ok
        if request.get("tools"):
            n += count(json.dumps(request["tools"]))
        return n, whole


MESSAGES = Messages()
