"""Google's Gemini API (generateContent, streamGenerateContent, embedContent,
batchEmbedContents), as the google-genai SDK and Vertex AI speak it. Its
candidatesTokenCount excludes thinking, which is billed as output, so thoughts are added
to output here; promptTokenCount already includes cached content."""
from __future__ import annotations

import json
import re
from typing import Any

from ..records import Usage
from .base import Protocol, Reading, StreamReader, as_int, counts, loads

_MODEL_IN_PATH = re.compile(r"/models/([^/:]+):")


def gemini_usage(u: Any) -> Usage | None:
    if not counts(u, "promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount"):
        return None
    thoughts = as_int(u.get("thoughtsTokenCount"))
    return Usage(input_tokens=as_int(u.get("promptTokenCount")) + as_int(u.get("toolUsePromptTokenCount")),
                 cached_input_tokens=as_int(u.get("cachedContentTokenCount")),
                 output_tokens=as_int(u.get("candidatesTokenCount")) + thoughts,
                 reasoning_tokens=thoughts)


def _read_chunk(chunk: Any, r: Reading) -> None:
    """One response object: usage is cumulative, so the last one seen wins."""
    if not isinstance(chunk, dict):
        return
    r.model = chunk.get("modelVersion") or r.model
    usage = gemini_usage(chunk.get("usageMetadata"))
    if usage is not None:
        r.usage = usage
    for cand in chunk.get("candidates") or ():
        if cand.get("finishReason"):
            r.complete = True
        for part in (cand.get("content") or {}).get("parts") or ():
            if isinstance(part.get("text"), str):
                r.output_text.append(part["text"])
            if isinstance(part.get("functionCall"), dict):
                r.output_text.append(json.dumps(part["functionCall"]))


class GenerateStream(StreamReader):
    def event(self, name: str | None, data: str) -> None:
        _read_chunk(loads(data), self.reading)


def _texts(contents: list) -> tuple[list[str], bool]:
    """The text parts of Gemini ``contents``, and whether every part was text (inline
    images and files have no local rule)."""
    texts, whole = [], True
    for content in contents:
        for part in (content.get("parts") or ()) if isinstance(content, dict) else ():
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                whole = False
    return texts, whole


class _Gemini(Protocol):
    vendor = "google"

    def path_model(self, path: str) -> str | None:
        m = _MODEL_IN_PATH.search(path)
        return m.group(1) if m else None


class Generate(_Gemini):
    api = "generate_content"
    request_keys = ("contents",)

    def read_body(self, body: Any) -> Reading | None:
        chunks = body if isinstance(body, list) else [body]  # a stream without alt=sse is one array
        if not all(isinstance(c, dict) for c in chunks):
            return None
        r = Reading()
        for chunk in chunks:
            _read_chunk(chunk, r)
        r.complete = True
        if r.usage is not None:
            r.output_text.clear()
        return r

    def stream_reader(self) -> StreamReader:
        return GenerateStream()

    def estimate_input(self, request: dict, count) -> tuple[int, bool]:
        contents = list(request.get("contents") or [])
        if request.get("systemInstruction"):
            contents.append(request["systemInstruction"])
        texts, whole = _texts(contents)
        n = sum(count(t) for t in texts)
        if request.get("tools"):
            n += count(json.dumps(request["tools"]))
        return n, whole


class Embed(_Gemini):
    """Embeddings: input only. The Gemini API may report no usage for them, so the input
    is then estimated from the texts sent (one ``content``, or a batch of ``requests``)."""

    api = "embed_content"
    request_keys = ("content", "requests")

    def read_body(self, body: Any) -> Reading | None:
        if not isinstance(body, dict):
            return None
        return Reading(usage=gemini_usage(body.get("usageMetadata")), complete=True)

    def stream_reader(self) -> StreamReader:  # embeddings never stream
        return GenerateStream()

    def estimate_input(self, request: dict, count) -> tuple[int, bool]:
        batch = request.get("requests")
        items = batch if isinstance(batch, list) else [request]
        texts, whole = _texts([item.get("content") for item in items if isinstance(item, dict)])
        return sum(count(t) for t in texts), whole


GENERATE, EMBED = Generate(), Embed()
