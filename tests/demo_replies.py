"""What tokmagic's demo responses report, read straight from responses.json and put in
tokmagic's convention (input counts cached and cache-write tokens too), so the demo and
quickstart tests compare tokmagic with the data, not with numbers copied into a test."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

RESPONSES = Path(__file__).resolve().parent.parent / "tokmagic" / "demo" / "responses.json"
USAGE_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")


def load() -> dict[str, Any]:
    return json.loads(RESPONSES.read_text("utf-8"))


class Turns:
    """The replies in the order the demo server hands them out: each kind in turn."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.turns: Counter[str] = Counter()

    def next(self, kind: str) -> Any:
        pool = self.data[kind]
        reply = pool[self.turns[kind] % len(pool)]
        self.turns[kind] += 1
        return reply


def _events(reply: Any) -> list[Any]:
    return [event["data"] for event in reply] if isinstance(reply, list) else []


def reported(kind: str, reply: Any) -> dict[str, int] | None:
    """The usage a reply reports, as tokmagic should record it; None when it reports none."""
    if kind.startswith("openai"):
        usage = reply.get("usage") if isinstance(reply, dict) else next(
            (e["usage"] for e in _events(reply) if isinstance(e, dict) and e.get("usage")), None)
        if usage is None:
            return None
        return {"input_tokens": usage["prompt_tokens"],
                "cached_input_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
                "cache_write_tokens": 0, "output_tokens": usage.get("completion_tokens", 0)}
    if isinstance(reply, dict):
        usage, output = reply["usage"], reply["usage"]["output_tokens"]
    else:
        events = _events(reply)
        usage = next(e["message"]["usage"] for e in events if e["type"] == "message_start")
        output = [e["usage"]["output_tokens"] for e in events if e["type"] == "message_delta"][-1]
    read, write = usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]
    return {"input_tokens": usage["input_tokens"] + read + write, "cached_input_tokens": read,
            "cache_write_tokens": write, "output_tokens": output}


def text(kind: str, reply: Any) -> str:
    """The answer's text, as the SDK user reads it (streams joined)."""
    if kind == "openai_chat":
        return reply["choices"][0]["message"]["content"]
    if kind == "anthropic_messages":
        return "".join(block["text"] for block in reply["content"])
    parts = []
    for event in _events(reply):
        if not isinstance(event, dict):
            continue
        for choice in event.get("choices") or ():
            parts.append(choice["delta"].get("content") or "")
        if event.get("type") == "content_block_delta":
            parts.append(event["delta"]["text"])
    return "".join(parts)
