"""Capture for httpx and its successor httpx2 (same design, separate modules): wraps
``Client.send`` and ``AsyncClient.send``, which every request passes through whatever its
transport, and wraps the response's byte stream to watch a streamed body go by."""
from __future__ import annotations

from types import ModuleType

from ..protocols import TAIL, TAILS, recognise
from .exchange import Exchange, StreamWatcher, contained, in_exchange

MODULES = ("httpx2", "httpx")
_MARK = "__tokmagic_original__"


def _begin(request) -> Exchange | None:
    """An Exchange for an LLM request, None for any other (the common, cheap case)."""
    url = request.url
    # the raw path (without the query) is a plain attribute, where ``url.path`` decodes it
    if getattr(url, "_uri_reference", url).path[-TAIL:] not in TAILS:
        return None
    path = url.path
    protocol = recognise(request.method, path)
    if protocol is None or in_exchange.get():
        return None
    try:
        body = request.content
    except Exception:  # a streaming upload: no body to estimate from
        body = None
    port = url.port  # None for the scheme's default port
    return Exchange(protocol, url.host if port is None else f"{url.host}:{port}", path, body,
                    request.headers.raw)


def _observe(exchange: Exchange, response, stream_types) -> None:
    """Record a read body now, or wrap an unread one to watch it as it is read."""
    # every header lookup scans all the headers (about 9k instructions in httpx2): look
    # up only those the branch taken needs
    headers = response.headers
    exchange.response_headers(headers.get)
    if hasattr(response, "_content"):
        ctype = headers.get("content-type", "") if response.status_code < 400 else ""
        if "event-stream" in ctype or "ndjson" in ctype or "jsonl" in ctype:
            # a stream already read whole (an in-memory transport, a cache): read its events
            watcher = exchange.watch(response.status_code, ctype, None)  # content is decoded
            watcher.feed(response.content)
            watcher.end()
        else:
            exchange.body(response.status_code, response.content)
        return
    watcher = exchange.watch(response.status_code, headers.get("content-type", ""),
                             headers.get("content-encoding"))
    sync_type, async_type = stream_types
    stream = response.stream
    response.stream = (async_type if hasattr(stream, "__aiter__") else sync_type)(stream, watcher)


class _Watched:
    """Shared part of the stream wrappers: attributes the library reads (``elapsed``)
    come from the wrapped stream."""

    def __init__(self, inner, watcher: StreamWatcher) -> None:
        self._inner = inner
        self._watcher = watcher

    def __getattr__(self, name):
        return getattr(self._inner, name)

    @property
    def stream_observer(self):
        """The anthropic SDK looks for this optional hook on the body at every event:
        answered here, as None where the wrapped body has none, because a miss through
        __getattr__ raises twice and would cost more per event than the rest of capture."""
        return getattr(self._inner, "stream_observer", None)

    def __del__(self) -> None:
        # a response dropped before its body was read (a stream never iterated) is still
        # one call: recorded as interrupted, with what the request says
        watcher = self.__dict__.get("_watcher")
        if watcher is not None and not watcher.exchange.done:
            watcher.closed()


class _WatchedSync(_Watched):
    def __iter__(self):
        watcher = self._watcher
        try:
            for chunk in self._inner:
                watcher.feed(chunk)
                yield chunk
        except BaseException as exc:
            watcher.end(exc)
            raise
        watcher.end()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._watcher.closed()


class _WatchedAsync(_Watched):
    async def __aiter__(self):
        watcher = self._watcher
        try:
            async for chunk in self._inner:
                watcher.feed(chunk)
                yield chunk
        except BaseException as exc:
            watcher.end(exc)
            raise
        watcher.end()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._watcher.closed()


def _stream_types(module: ModuleType) -> tuple[type, type]:
    """Wrapper classes that pass the library's own isinstance checks."""
    return (type("WatchedSyncStream", (_WatchedSync, module.SyncByteStream), {}),
            type("WatchedAsyncStream", (_WatchedAsync, module.AsyncByteStream), {}))


def _sync_send(original, stream_types):
    def send(self, request, **kwargs):
        if request.method != "POST":  # recognise() reads POSTs only: skip the URL work
            return original(self, request, **kwargs)
        try:
            exchange = _begin(request)
        except Exception as exc:
            contained("request", exc)
            exchange = None
        if exchange is None:
            return original(self, request, **kwargs)
        try:
            response = original(self, request, **kwargs)
        except BaseException as exc:
            exchange.failed(exc)
            raise
        finally:
            exchange.leave()
        try:
            _observe(exchange, response, stream_types)
        except Exception as exc:
            contained("response", exc)
        return response
    return send


def _async_send(original, stream_types):
    async def send(self, request, **kwargs):
        if request.method != "POST":  # recognise() reads POSTs only: skip the URL work
            return await original(self, request, **kwargs)
        try:
            exchange = _begin(request)
        except Exception as exc:
            contained("request", exc)
            exchange = None
        if exchange is None:
            return await original(self, request, **kwargs)
        try:
            response = await original(self, request, **kwargs)
        except BaseException as exc:
            exchange.failed(exc)
            raise
        finally:
            exchange.leave()
        try:
            _observe(exchange, response, stream_types)
        except Exception as exc:
            contained("response", exc)
        return response
    return send


def patch(module: ModuleType) -> None:
    """Wrap ``send`` of the module's clients; a second call changes nothing."""
    types = _stream_types(module)
    for cls, wrap in ((module.Client, _sync_send), (module.AsyncClient, _async_send)):
        current = cls.__dict__["send"]
        if getattr(current, _MARK, None) is None:
            wrapper = wrap(current, types)
            wrapper.__name__, wrapper.__qualname__, wrapper.__doc__ = "send", current.__qualname__, current.__doc__
            setattr(wrapper, _MARK, current)
            cls.send = wrapper


def unpatch(module: ModuleType) -> None:
    """Restore ``send``, but only where it still holds tokmagic's wrapper."""
    for cls in (module.Client, module.AsyncClient):
        original = getattr(cls.__dict__.get("send"), _MARK, None)
        if original is not None:
            cls.send = original
