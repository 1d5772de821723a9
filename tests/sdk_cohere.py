"""Drive Cohere's real SDK (on httpx 0.x) through a Cohere case: v2 (``ClientV2``:
``chat``, ``chat_stream``, ``embed``) and v1 (``Client.chat``), sync and async. The
recorded body's fields are the methods' argument names."""
from __future__ import annotations

import cohere
import httpx

from .sdk import HOSTS, HttpxAsyncRouteTransport, HttpxRouteTransport, Seen, drive

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


def run(case: dict, base: str, mode: str, routed: bool = True) -> Seen:
    """``mode``: "sync" or "async"."""
    name, kwargs = _call(case)
    is_async = mode == "async"
    return drive(lambda: http_client(case, base, is_async=is_async, routed=routed),
                 lambda http: getattr(make_client(case, base, http, routed=routed), name)(**kwargs),
                 stream=name.endswith("_stream"), is_async=is_async)
