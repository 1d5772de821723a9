"""Drive the real ollama SDK (``ollama.Client`` / ``AsyncClient``) through a case of
Ollama's native API: ``chat``, ``generate`` and ``embed``, streamed or not as recorded.
The SDK talks to ``http://localhost:11434`` by default, which is where the calls are
aimed and then routed to the replay server (the SDK is on httpx 0.x)."""
from __future__ import annotations

import ollama

from .sdk import HOSTS, HttpxAsyncRouteTransport, HttpxRouteTransport, Seen, drive

#: The SDK method for each native API.
METHODS = {"ollama_chat": "chat", "ollama_generate": "generate", "ollama_embed": "embed"}


def make_client(case: dict, base: str, *, is_async: bool, routed: bool):
    kwargs = {"headers": {"X-Replay-Case": case["id"]}}
    if routed:
        kwargs["transport"] = (HttpxAsyncRouteTransport if is_async else HttpxRouteTransport)(base)
    cls = ollama.AsyncClient if is_async else ollama.Client
    return cls(host=f"http://{HOSTS['ollama']}" if routed else base, **kwargs)


def run(case: dict, base: str, mode: str, routed: bool = True) -> Seen:
    """``mode``: "sync" or "async". The recorded body is the method's arguments: they
    have the same names."""
    body, is_async = dict(case["request"]["body"]), mode == "async"
    return drive(lambda: make_client(case, base, is_async=is_async, routed=routed),
                 lambda client: getattr(client, METHODS[case["api"]])(**body),
                 stream=bool(body.get("stream")), is_async=is_async)
