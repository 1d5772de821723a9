"""Drive the real google-genai SDK through a recorded Gemini case, as user code would:
``generate_content``, ``generate_content_stream`` and ``embed_content``, sync and async
(``client.aio``), for the Gemini API and Vertex AI.

google-genai sends sync calls through httpx2, or httpx 0.x when its HTTP options hold
httpx objects (or GOOGLE_GENAI_HTTP_CLIENT=httpx), and async ones through aiohttp when it
is installed (as here), unless a transport is given. So modes "sync" and "async" use
httpx2, "sync-httpx" and "async-httpx" httpx (both chosen by the transport passed,
which routes them to the real host); "async-aiohttp" is the SDK's default async path,
aimed at the replay server itself."""
from __future__ import annotations

import re
from typing import Any

import google.auth.credentials
import httpx
import httpx2
from google import genai
from google.genai import errors, types

from .sdk import (HOSTS, AsyncRouteTransport, HttpxAsyncRouteTransport, HttpxRouteTransport, RouteTransport, Seen,
                  drive, dump, raised)

_PATH = re.compile(r"^/(v[^/]+)/(?:projects/([^/]+)/locations/([^/]+)/publishers/google/)?models/([^/:]+):(\w+)$")
#: Request fields that google-genai takes in its config rather than as arguments.
_CONFIG_FIELDS = ("systemInstruction", "tools", "toolConfig", "safetySettings", "cachedContent")


class StandInCredentials(google.auth.credentials.Credentials):
    """Vertex AI needs Google credentials to put a bearer token on its requests; the
    replay server checks none, so a token that is never sent anywhere else does."""

    def refresh(self, request) -> None:
        self.token = "test-token"


#: backend: (sync transport, async transport, routing sync transport, routing async transport)
_TRANSPORTS = {"httpx2": (httpx2.HTTPTransport, httpx2.AsyncHTTPTransport, RouteTransport, AsyncRouteTransport),
               "httpx": (httpx.HTTPTransport, httpx.AsyncHTTPTransport, HttpxRouteTransport, HttpxAsyncRouteTransport)}


def make_client(case: dict, base: str, *, routed: bool, backend: str) -> genai.Client:
    """The client a user would build: Gemini API with an API key, or Vertex AI with a
    project and location (the recorded path's), on ``backend`` ("httpx2", "httpx" or
    "aiohttp"), aimed at the provider's real host and routed to ``base`` unless
    ``routed`` is False or the calls go through aiohttp."""
    version, project, location, _, _ = _PATH.match(case["request"]["path"]).groups()
    routed = routed and backend != "aiohttp"
    options: dict[str, Any] = {"base_url": f"https://{HOSTS[case['provider']]}" if routed else base,
                               "api_version": version, "headers": {"X-Replay-Case": case["id"]}}
    if backend != "aiohttp":
        sync, async_, route, async_route = _TRANSPORTS[backend]
        options["client_args"] = {"transport": route(base) if routed else sync()}
        options["async_client_args"] = {"transport": async_route(base) if routed else async_()}
    http_options = types.HttpOptions(**options)
    if project:
        return genai.Client(vertexai=True, project=project, location=location,
                            credentials=StandInCredentials(), http_options=http_options)
    return genai.Client(api_key="test-key", http_options=http_options)


def call(case: dict) -> tuple[str, dict]:
    """The SDK method (generate_content, generate_content_stream or embed_content) and
    its arguments that send the recorded request."""
    *_, model, method = _PATH.match(case["request"]["path"]).groups()
    body = case["request"]["body"]
    if method == "batchEmbedContents":
        requests = body["requests"]
        return "embed_content", {"model": model, "contents": [r["content"] for r in requests],
                                 "config": {"task_type": requests[0].get("taskType")}}
    config = {**body.get("generationConfig", {}), **{k: body[k] for k in _CONFIG_FIELDS if k in body}}
    name = "generate_content_stream" if method == "streamGenerateContent" else "generate_content"
    return name, {"model": model, "contents": body["contents"],
                  "config": types.GenerateContentConfig.model_validate(config)}


def _dump(obj) -> Any:
    """What user code got, without the replay server's Date header (a clock, not part of
    the exchange)."""
    data = dump(obj)
    http = data.get("sdk_http_response") or {}
    if http.get("headers"):  # spelt "date" by httpx2, "Date" by aiohttp
        http["headers"] = {k: v for k, v in http["headers"].items() if k.lower() != "date"}
    return data


def _raised(exc: Exception, events: list) -> Seen:
    if isinstance(exc, errors.APIError):
        return raised(exc, [*events, exc.details], status_code=exc.code)
    return raised(exc, events)


def run(case: dict, base: str, mode: str, routed: bool = True) -> Seen:
    """``mode``: "sync" or "async" (httpx2), "sync-httpx" or "async-httpx", or
    "async-aiohttp"."""
    kind, _, backend = mode.partition("-")
    name, kwargs = call(case)
    is_async = kind == "async"

    def open_client():
        client = make_client(case, base, routed=routed, backend=backend or "httpx2")
        return client.aio if is_async else client
    return drive(open_client, lambda client: getattr(client.models, name)(**kwargs),
                 stream=name == "generate_content_stream", is_async=is_async, convert=_dump, fail=_raised)
