"""Drive the real SDKs through a recorded case, as user code would, and capture what the
user code sees (parsed response, streamed chunks/events, or the raised exception) so
that it can be compared with and without tokmagic. The openai and anthropic SDKs are
driven here; google-genai, ollama, mistralai and cohere in the sdk_* modules beside it,
which ``run`` dispatches to."""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
import httpx2

#: The host each provider really serves from. The corpus tests send every request to that
#: host (so tokmagic sees the real host and names the real provider) and a transport routes
#: it to the local replay server.
HOSTS = {
    "openai": "api.openai.com",
    "azure": "example-resource.openai.azure.com",
    "groq": "api.groq.com",
    "together": "api.together.xyz",
    "deepseek": "api.deepseek.com",
    "mistral": "api.mistral.ai",
    "openrouter": "openrouter.ai",
    "anthropic": "api.anthropic.com",
    "google": "generativelanguage.googleapis.com",
    "google-vertex": "aiplatform.googleapis.com",
    "ollama": "localhost:11434",
    "cohere": "api.cohere.com",
}
OPENAI_APIS = {"chat": "/chat/completions", "completions": "/completions",
               "responses": "/responses", "embeddings": "/embeddings"}
#: Modes whose calls go through aiohttp. It has no pluggable transport, so they cannot be
#: routed: the SDK is aimed at the replay server itself, and tokmagic sees a local host.
AIOHTTP_MODES = ("async-aiohttp",)


def sdk_of(case: dict) -> str | None:
    """Which SDK sends this case: "openai", "anthropic", "google-genai", "ollama",
    "cohere", or None (not ours to drive). Ollama's OpenAI-compatible API is the openai
    SDK's; Mistral's cases are the openai SDK's too, plus mistralai's own modes."""
    provider, api = case["provider"], case["api"]
    if provider == "anthropic" and api == "messages":
        return "anthropic"
    if provider == "cohere":  # its own API, whose "chat" is not OpenAI's
        return "cohere"
    if provider in HOSTS and api in OPENAI_APIS:
        return "openai"
    if provider.startswith("google"):
        return "google-genai"
    if provider == "ollama":
        return "ollama"
    return None


def skip_reason(case: dict) -> str | None:
    if sdk_of(case) is not None:
        return None
    return f"no SDK call for {case['provider']} {case['api']}"


def is_stream(case: dict) -> bool:
    return (bool((case["request"]["body"] or {}).get("stream"))
            or case["request"]["path"].endswith(":streamGenerateContent"))


def recorded_host(case: dict, mode: str, base: str) -> str:
    """The host tokmagic records for a call made in ``mode``: the provider's own, or the
    replay server's where the call cannot be routed."""
    return urllib.parse.urlsplit(base).netloc if mode in AIOHTTP_MODES else HOSTS[case["provider"]]


def status_errors() -> tuple[type, ...]:
    """The exception types the SDKs raise for an HTTP error status."""
    import anthropic
    import cohere.core.api_error
    import google.genai.errors
    import ollama
    import openai

    return (openai.APIStatusError, anthropic.APIStatusError, google.genai.errors.APIError,
            ollama.ResponseError, cohere.core.api_error.ApiError)


def is_error(case: dict) -> bool:
    return case["response"]["status"] >= 400


def is_truncated(case: dict) -> bool:
    return bool((case.get("replay") or {}).get("truncated"))


# -- routing ------------------------------------------------------------------------

def _retarget(request, base: str) -> None:
    target = httpx2.URL(base)
    request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)


def _routing(module) -> tuple[type, type]:
    """Sync and async transports of ``module`` (httpx2, or httpx for the SDKs still on
    it) that send every request to ``base`` whatever its URL's host (like a DNS override)."""

    class Route(module.HTTPTransport):
        def __init__(self, base: str, **kwargs) -> None:
            super().__init__(**kwargs)
            self._base = base

        def handle_request(self, request):
            _retarget(request, self._base)
            return super().handle_request(request)

    class AsyncRoute(module.AsyncHTTPTransport):
        def __init__(self, base: str, **kwargs) -> None:
            super().__init__(**kwargs)
            self._base = base

        async def handle_async_request(self, request):
            _retarget(request, self._base)
            return await super().handle_async_request(request)

    return Route, AsyncRoute


RouteTransport, AsyncRouteTransport = _routing(httpx2)
HttpxRouteTransport, HttpxAsyncRouteTransport = _routing(httpx)


# -- clients ------------------------------------------------------------------------

def _prefix(case: dict) -> str:
    path = case["request"]["path"]
    tail = OPENAI_APIS[case["api"]]
    assert path.endswith(tail), path
    return path[: -len(tail)]


def make_client(case: dict, base: str, *, is_async: bool = False, routed: bool = True):
    """The SDK client a user would build for the case's provider. ``routed``: aimed at the
    provider's real host and routed to ``base``; else aimed at ``base`` directly with the
    SDK's own default HTTP client."""
    import anthropic
    import openai

    sdk = sdk_of(case)
    host = f"https://{HOSTS[case['provider']]}" if routed else base
    headers = {"X-Replay-Case": case["id"]}
    common: dict[str, Any] = {"api_key": "test-key", "max_retries": 0, "default_headers": headers}
    if routed:
        mod = openai if sdk == "openai" else anthropic
        if is_async:
            common["http_client"] = mod.DefaultAsyncHttpxClient(transport=AsyncRouteTransport(base))
        else:
            common["http_client"] = mod.DefaultHttpxClient(transport=RouteTransport(base))
    if sdk == "anthropic":
        cls = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
        return cls(base_url=host, **common)
    if case["provider"] == "azure":
        query = dict(urllib.parse.parse_qsl(case["request"].get("query") or ""))
        cls = openai.AsyncAzureOpenAI if is_async else openai.AzureOpenAI
        return cls(azure_endpoint=host, api_version=query.get("api-version", "2024-02-01"), **common)
    cls = openai.AsyncOpenAI if is_async else openai.OpenAI
    return cls(base_url=host + _prefix(case), **common)


def resource(client, case: dict):
    """The SDK resource whose ``create`` user code calls for the case."""
    if sdk_of(case) == "anthropic":
        beta = "beta=true" in (case["request"].get("query") or "")
        return client.beta.messages if beta else client.messages
    return {"chat": lambda c: c.chat.completions, "completions": lambda c: c.completions,
            "responses": lambda c: c.responses, "embeddings": lambda c: c.embeddings}[case["api"]](client)


def endpoint(client, case: dict, helper: bool = False):
    """The high-level method user code calls for the case."""
    res = resource(client, case)
    return res.stream if helper else res.create


def call_kwargs(method, body: dict) -> dict:
    """The recorded body as keyword arguments of ``method``; keys it has no parameter for
    go through ``extra_body``, so the request body is the recorded one."""
    params = inspect.signature(method).parameters
    kwargs, extra = {}, {}
    for key, value in body.items():
        (kwargs if key in params and key not in ("extra_body", "extra_headers") else extra)[key] = value
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


# -- what user code sees ------------------------------------------------------------

@dataclass
class Seen:
    """What user code got back from one call."""

    kind: str                              # "response" | "stream" | "raised"
    value: Any = None                      # model_dump() or list of model_dump()
    final: Any = None                      # the stream helper's final message
    exc_type: type | None = None
    status_code: int | None = None
    message: str | None = None
    exc: BaseException | None = field(default=None, compare=False, repr=False)

    def comparable(self):
        if self.kind == "raised":
            return (self.kind, self.exc_type, self.status_code, self.message, self.value)
        return (self.kind, self.value, self.final)

    def streamed_text(self) -> str:
        """The generated text user code received from a stream (or a partial one)."""
        out = []
        for item in self.value or ():
            for choice in item.get("choices") or ():
                delta = choice.get("delta") or {}
                out.append(delta.get("content") or "")
                for call in delta.get("tool_calls") or ():
                    fn = call.get("function") or {}
                    out.append((fn.get("name") or "") + (fn.get("arguments") or ""))
            if item.get("type") == "response.output_text.delta":
                out.append(item.get("delta") or "")
            delta = item.get("delta") if item.get("type") == "content_block_delta" else None
            if isinstance(delta, dict):
                out.append(delta.get("text") or delta.get("partial_json") or "")
        return "".join(out)


def dump(obj) -> Any:
    """An SDK object as plain data (base64 embeddings are strings the SDK types as floats)."""
    return obj.model_dump(warnings=False)


def raised(exc: BaseException, partial: list | None = None, status_code: int | None = None) -> Seen:
    """What user code saw when the call raised ``exc`` (after receiving ``partial``)."""
    status = getattr(exc, "status_code", None) if status_code is None else status_code
    return Seen("raised", partial, exc_type=type(exc), status_code=status, message=str(exc), exc=exc)


def _opened(result):
    """A stream as user code iterates it: inside its own ``with`` where it has one
    (mistralai's), else as it is (a generator)."""
    return result if hasattr(result, "__enter__") else contextlib.nullcontext(result)


def _opened_async(result):
    return result if hasattr(result, "__aenter__") else contextlib.nullcontext(result)


def _drive_sync(open_client, call, stream: bool, convert, fail) -> Seen:
    events: list = []
    with open_client() as client:
        try:
            result = call(client)
            if not stream:
                return Seen("response", convert(result))
            with _opened(result) as items:
                for item in items:
                    events.append(convert(item))
            return Seen("stream", events)
        except Exception as exc:  # what user code would see
            return fail(exc, events)


async def _drive_async(open_client, call, stream: bool, convert, fail) -> Seen:
    events: list = []
    async with open_client() as client:
        try:
            result = call(client)
            if inspect.isawaitable(result):  # a coroutine; an async generator is iterated as it is
                result = await result
            if not stream:
                return Seen("response", convert(result))
            async with _opened_async(result) as items:
                async for item in items:
                    events.append(convert(item))
            return Seen("stream", events)
        except Exception as exc:
            return fail(exc, events)


def drive(open_client: Callable[[], Any], call: Callable[[Any], Any], *, stream: bool, is_async: bool,
          convert: Callable[[Any], Any] = dump, fail: Callable[..., Seen] = raised) -> Seen:
    """What user code sees when it opens a client (``open_client()``, a sync or async
    context manager), makes one call (``call(client)``) and, for a stream, iterates it to
    the end: the answer or each item through ``convert``, or what it raised through
    ``fail(exc, items so far)``. The way the native SDKs (sdk_* modules) are driven."""
    if is_async:
        return asyncio.run(_drive_async(open_client, call, stream, convert, fail))
    return _drive_sync(open_client, call, stream, convert, fail)


def run_sync(case: dict, base: str, *, helper: bool = False, routed: bool = True) -> Seen:
    body = dict(case["request"]["body"] or {})
    client = make_client(case, base, routed=routed)
    with client:
        method = endpoint(client, case, helper)
        if helper:
            body.pop("stream", None)
        events: list = []
        try:
            if helper:
                with method(**call_kwargs(method, body), timeout=30) as stream:
                    for event in stream:
                        events.append(dump(event))
                    final = stream.get_final_message()
                return Seen("stream", events, dump(final))
            result = method(**call_kwargs(method, body), timeout=30)
            if not body.get("stream"):
                return Seen("response", dump(result))
            for item in result:
                events.append(dump(item))
            return Seen("stream", events)
        except Exception as exc:  # what user code would see
            return raised(exc, events)


async def _run_async(case: dict, base: str, helper: bool, routed: bool) -> Seen:
    body = dict(case["request"]["body"] or {})
    client = make_client(case, base, is_async=True, routed=routed)
    async with client:
        method = endpoint(client, case, helper)
        if helper:
            body.pop("stream", None)
        events: list = []
        try:
            if helper:
                async with method(**call_kwargs(method, body), timeout=30) as stream:
                    async for event in stream:
                        events.append(dump(event))
                    final = (await stream.get_final_message())
                return Seen("stream", events, dump(final))
            result = await method(**call_kwargs(method, body), timeout=30)
            if not body.get("stream"):
                return Seen("response", dump(result))
            async for item in result:
                events.append(dump(item))
            return Seen("stream", events)
        except Exception as exc:
            return raised(exc, events)


def run_async(case: dict, base: str, *, helper: bool = False, routed: bool = True) -> Seen:
    return asyncio.run(_run_async(case, base, helper, routed))


def run(case: dict, base: str, mode: str, routed: bool = True) -> Seen:
    """``mode``: one of ``modes(case)``."""
    from . import sdk_cohere, sdk_google, sdk_mistral, sdk_ollama  # they import this module

    if mode.startswith("mistral-"):
        return sdk_mistral.run(case, base, mode.removeprefix("mistral-"), routed)
    native = {"google-genai": sdk_google, "ollama": sdk_ollama, "cohere": sdk_cohere}.get(sdk_of(case))
    if native is not None:
        return native.run(case, base, mode, routed)
    fn = run_async if mode.startswith("async") else run_sync
    return fn(case, base, helper=mode.endswith("helper"), routed=routed)


def modes(case: dict) -> list[str]:
    """The ways user code calls the case: sync and async; Anthropic's stream helper;
    google-genai over httpx 0.x as well as httpx2, and its async client over aiohttp
    (its default); and Mistral's cases through mistralai's own SDK as well as openai's."""
    out = ["sync", "async"]
    if sdk_of(case) == "anthropic" and is_stream(case):
        out += ["sync-helper", "async-helper"]
    if sdk_of(case) == "google-genai":
        out += ["sync-httpx", "async-httpx", "async-aiohttp"]
    if case["provider"] == "mistral":
        out += ["mistral-sync", "mistral-async"]
    return out


# -- raw responses --------------------------------------------------------------------

def _parsed(value) -> Any:
    return dump(value) if hasattr(value, "model_dump") else value


def run_raw(case: dict, base: str, *, streaming: bool = False, routed: bool = True) -> tuple[Seen, Any]:
    """``create`` through ``with_raw_response`` (or ``with_streaming_response``); returns
    what user code sees and the underlying httpx2 response's ``elapsed``."""
    body = dict(case["request"]["body"] or {})
    client = make_client(case, base, routed=routed)
    with client:
        res = resource(client, case)
        wrapper = res.with_streaming_response if streaming else res.with_raw_response
        method = wrapper.create
        kwargs = call_kwargs(res.create, body)
        events: list = []
        try:
            if streaming:
                with method(**kwargs, timeout=30) as response:
                    parsed = response.parse()
                    if body.get("stream"):
                        events = [dump(item) for item in parsed]
                    http = response.http_response
                    seen = Seen("stream", events) if body.get("stream") else Seen("response", _parsed(parsed))
            else:
                raw = method(**kwargs, timeout=30)
                parsed = raw.parse()
                http = raw.http_response
                if body.get("stream"):
                    events = [dump(item) for item in parsed]
                    seen = Seen("stream", events)
                else:
                    seen = Seen("response", _parsed(parsed))
            return seen, http.elapsed
        except Exception as exc:
            return raised(exc, events), None


async def _run_raw_async(case: dict, base: str, streaming: bool, routed: bool) -> tuple[Seen, Any]:
    body = dict(case["request"]["body"] or {})
    client = make_client(case, base, is_async=True, routed=routed)
    async with client:
        res = resource(client, case)
        wrapper = res.with_streaming_response if streaming else res.with_raw_response
        method = wrapper.create
        kwargs = call_kwargs(res.create, body)
        events: list = []
        try:
            if streaming:
                async with method(**kwargs, timeout=30) as response:
                    parsed = await response.parse()
                    if body.get("stream"):
                        events = [dump(item) async for item in parsed]
                    http = response.http_response
                    seen = Seen("stream", events) if body.get("stream") else Seen("response", _parsed(parsed))
            else:
                raw = await method(**kwargs, timeout=30)
                parsed = raw.parse()  # the legacy raw response parses synchronously
                if inspect.isawaitable(parsed):
                    parsed = await parsed
                http = raw.http_response
                if body.get("stream"):
                    events = [dump(item) async for item in parsed]
                    seen = Seen("stream", events)
                else:
                    seen = Seen("response", _parsed(parsed))
            return seen, http.elapsed
        except Exception as exc:
            return raised(exc, events), None


def run_raw_async(case: dict, base: str, *, streaming: bool = False, routed: bool = True) -> tuple[Seen, Any]:
    return asyncio.run(_run_raw_async(case, base, streaming, routed))
