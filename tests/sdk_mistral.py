"""Drive Mistral's own SDK (mistralai, on httpx2) through the corpus's Mistral cases:
``chat.complete`` and ``chat.stream``, sync and async. It speaks the OpenAI chat wire
format on /v1/chat/completions, so tokmagic must read it as any OpenAI-compatible host."""
from __future__ import annotations

import asyncio

import httpx2
from mistralai.client import Mistral

from .sdk import HOSTS, AsyncRouteTransport, RouteTransport, Seen, dump, raised


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


def _run_sync(case: dict, base: str, routed: bool) -> Seen:
    stream, kwargs = _arguments(case)
    events: list = []
    with make_client(case, base, is_async=False, routed=routed) as client:
        try:
            if not stream:
                return Seen("response", dump(client.chat.complete(**kwargs)))
            with client.chat.stream(**kwargs) as events_stream:
                for event in events_stream:
                    events.append(dump(event))
            return Seen("stream", events)
        except Exception as exc:  # what user code would see
            return raised(exc, events)


async def _run_async(case: dict, base: str, routed: bool) -> Seen:
    stream, kwargs = _arguments(case)
    events: list = []
    async with make_client(case, base, is_async=True, routed=routed) as client:
        try:
            if not stream:
                return Seen("response", dump(await client.chat.complete_async(**kwargs)))
            async with await client.chat.stream_async(**kwargs) as events_stream:
                async for event in events_stream:
                    events.append(dump(event))
            return Seen("stream", events)
        except Exception as exc:
            return raised(exc, events)


def run(case: dict, base: str, mode: str, routed: bool = True) -> Seen:
    """``mode``: "sync" or "async"."""
    if mode == "sync":
        return _run_sync(case, base, routed)
    return asyncio.run(_run_async(case, base, routed))
