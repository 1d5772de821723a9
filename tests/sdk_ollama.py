"""Drive the real ollama SDK (``ollama.Client`` / ``AsyncClient``) through a case of
Ollama's native API: ``chat``, ``generate`` and ``embed``, streamed or not as recorded.
The SDK talks to ``http://localhost:11434`` by default, which is where the calls are
aimed and then routed to the replay server (the SDK is on httpx 0.x)."""
from __future__ import annotations

import asyncio

import ollama

from .sdk import HOSTS, HttpxAsyncRouteTransport, HttpxRouteTransport, Seen, dump, raised

#: The SDK method for each native API.
METHODS = {"ollama_chat": "chat", "ollama_generate": "generate", "ollama_embed": "embed"}


def make_client(case: dict, base: str, *, is_async: bool, routed: bool):
    kwargs = {"headers": {"X-Replay-Case": case["id"]}}
    if routed:
        kwargs["transport"] = (HttpxAsyncRouteTransport if is_async else HttpxRouteTransport)(base)
    cls = ollama.AsyncClient if is_async else ollama.Client
    return cls(host=f"http://{HOSTS['ollama']}" if routed else base, **kwargs)


def _body(case: dict) -> dict:
    """The recorded body as the method's arguments: they have the same names."""
    return dict(case["request"]["body"])


def _run_sync(case: dict, base: str, routed: bool) -> Seen:
    events: list = []
    with make_client(case, base, is_async=False, routed=routed) as client:
        try:
            result = getattr(client, METHODS[case["api"]])(**_body(case))
            if not case["request"]["body"].get("stream"):
                return Seen("response", dump(result))
            for part in result:
                events.append(dump(part))
            return Seen("stream", events)
        except Exception as exc:  # what user code would see
            return raised(exc, events)


async def _run_async(case: dict, base: str, routed: bool) -> Seen:
    events: list = []
    async with make_client(case, base, is_async=True, routed=routed) as client:
        try:
            result = await getattr(client, METHODS[case["api"]])(**_body(case))
            if not case["request"]["body"].get("stream"):
                return Seen("response", dump(result))
            async for part in result:
                events.append(dump(part))
            return Seen("stream", events)
        except Exception as exc:
            return raised(exc, events)


def run(case: dict, base: str, mode: str, routed: bool = True) -> Seen:
    """``mode``: "sync" or "async"."""
    if mode == "sync":
        return _run_sync(case, base, routed)
    return asyncio.run(_run_async(case, base, routed))
