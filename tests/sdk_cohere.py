"""Drive Cohere's real SDK (on httpx 0.x) through a Cohere case: v2 (``ClientV2``:
``chat``, ``chat_stream``, ``embed``) and v1 (``Client.chat``), sync and async. The
recorded body's fields are the methods' argument names."""
from __future__ import annotations

import asyncio

import cohere
import httpx

from .sdk import HOSTS, HttpxAsyncRouteTransport, HttpxRouteTransport, Seen, dump, raised

_CLIENTS = {("v2", False): cohere.ClientV2, ("v2", True): cohere.AsyncClientV2,
            ("v1", False): cohere.Client, ("v1", True): cohere.AsyncClient}


def http_client(case: dict, base: str, *, is_async: bool, routed: bool):
    """The httpx client the SDK is given (ClientV2 has no close of its own: the caller
    closes this one)."""
    headers = {"X-Replay-Case": case["id"]}
    if is_async:
        return httpx.AsyncClient(headers=headers, transport=HttpxAsyncRouteTransport(base) if routed else None)
    return httpx.Client(headers=headers, transport=HttpxRouteTransport(base) if routed else None)


def make_client(case: dict, base: str, http, *, routed: bool):
    version = case["request"]["path"].split("/")[1]
    cls = _CLIENTS[version, isinstance(http, httpx.AsyncClient)]
    return cls(api_key="test-key", base_url=f"https://{HOSTS['cohere']}" if routed else base, httpx_client=http)


def _call(case: dict) -> tuple[str, dict]:
    """The method ("chat", "chat_stream" or "embed") and its arguments."""
    body = dict(case["request"]["body"])
    name = case["request"]["path"].rsplit("/", 1)[1]
    if body.pop("stream", False):
        name += "_stream"
    return name, body


def _run_sync(case: dict, base: str, routed: bool) -> Seen:
    name, kwargs = _call(case)
    events: list = []
    with http_client(case, base, is_async=False, routed=routed) as http:
        client = make_client(case, base, http, routed=routed)
        try:
            result = getattr(client, name)(**kwargs)
            if not name.endswith("_stream"):
                return Seen("response", dump(result))
            for event in result:
                events.append(dump(event))
            return Seen("stream", events)
        except Exception as exc:  # what user code would see
            return raised(exc, events)


async def _run_async(case: dict, base: str, routed: bool) -> Seen:
    name, kwargs = _call(case)
    events: list = []
    async with http_client(case, base, is_async=True, routed=routed) as http:
        client = make_client(case, base, http, routed=routed)
        try:
            result = getattr(client, name)(**kwargs)
            if not name.endswith("_stream"):
                return Seen("response", dump(await result))
            async for event in result:
                events.append(dump(event))
            return Seen("stream", events)
        except Exception as exc:
            return raised(exc, events)


def run(case: dict, base: str, mode: str, routed: bool = True) -> Seen:
    """``mode``: "sync" or "async"."""
    if mode == "sync":
        return _run_sync(case, base, routed)
    return asyncio.run(_run_async(case, base, routed))
