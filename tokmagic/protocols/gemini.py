"""Google's Gemini API (generateContent, streamGenerateContent), as the google-genai SDK
and Vertex AI speak it. Its candidatesTokenCount excludes thinking, which is billed as
output, so thoughts are added to output here; promptTokenCount already includes cached
content."""
from __future__ import annotations

import json
import re
from typing import Any

from ..records import Usage
from .base import Protocol, Reading, StreamReader, as_int, loads

_MODEL_IN_PATH = re.compile(r"/models/([^/:]+):")


def gemini_usage(u: Any) -> Usage | None:
    if not isinstance(u, dict):
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


class Generate(Protocol):
    vendor, api = "google", "generate_content"

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

    def path_model(self, path: str) -> str | None:
        m = _MODEL_IN_PATH.search(path)
        return m.group(1) if m else None

    def estimate_input(self, request: dict, count) -> tuple[int, bool]:
        n, whole = 0, True
        contents = list(request.get("contents") or [])
        if request.get("systemInstruction"):
            contents.append(request["systemInstruction"])
        for content in contents:
            for part in (content.get("parts") or ()) if isinstance(content, dict) else ():
                if isinstance(part.get("text"), str):
                    n += count(part["text"])
                else:
                    whole = False  # inline images, files: no local rule
        if request.get("tools"):
            n += count(json.dumps(request["tools"]))
        return n, whole


GENERATE = Generate()
