"""Drive Mistral's own SDK (mistralai, on httpx2) through the corpus's Mistral cases:
``chat.complete`` and ``chat.stream``, sync and async. It speaks the OpenAI chat wire
format on /v1/chat/completions, so tokmagic must read it as any OpenAI-compatible host."""
from __future__ import annotations

import httpx2
from mistralai.client import Mistral

from .sdk import HOSTS, AsyncRouteTransport, RouteTransport, Seen, drive


def make_client(case: dict, base: str, *, is_async: bool, routed: bool) -> Mistral:
    headers = {"X-Replay-Case": case["id"]}
    url = f"https://{HOSTS['mistral']}" if routed else base
    if is_async:
        http = httpx2.AsyncClient(headers=headers, transport=AsyncRouteTransport(base) if routed else None)
        return Mistral(api_key="test-key", server_url=url, async_client=http)
    http = httpx2.Client(headers=headers, transport=RouteTransport(base) if routed else None)
    return Mistral(api_key="test-key", server_url=url, client=http)


def _arguments(case: dict) -> tuple[bool, dict]:
    """Whether the case streams, and the recorded body as the method's arguments (the
    method, not an argument, says whether to stream)."""
    body = dict(case["request"]["body"])
    return bool(body.pop("stream", False)), body


def run(case: dict, base: str, mode: str, routed: bool = True) -> Seen:
    """``mode``: "sync" or "async"."""
    stream, kwargs = _arguments(case)
    is_async = mode == "async"
    name = ("stream" if stream else "complete") + ("_async" if is_async else "")
    return drive(lambda: make_client(case, base, is_async=is_async, routed=routed),
                 lambda client: getattr(client.chat, name)(**kwargs), stream=stream, is_async=is_async)
