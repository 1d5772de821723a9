"""Capture for aiohttp's client: one exchange per ``ClientSession._request`` (every
request method comes down to it), and the response body watched as aiohttp fills the
response's ``StreamReader`` (``feed_data``, ``feed_eof``, ``set_exception``).

A StreamReader has ``__slots__`` and no weak references, so the watched ones are kept in
a dict by id. An entry goes at the end of the body, at an error, when the response is
closed or released, or when the response is collected unfinished: the response holds its
reader, so a finalizer on it removes the entry before the reader can go and its id be
reused. The hooks cost other readers (every body aiohttp receives or serves) one test of
an empty dict."""
from __future__ import annotations

import json
import weakref
from contextlib import suppress
from types import ModuleType
from typing import Callable

from ..protocols import recognise
from .exchange import Exchange, StreamWatcher, contained, header_pairs, in_exchange
from .patching import cannot_patch, unwrap, wrap

MODULES = ("aiohttp",)

#: id(StreamReader) -> its watcher, for bodies still arriving.
_watched: dict[int, StreamWatcher] = {}


def _request_body(kwargs: dict) -> bytes | None:
    """The request body as sent, for estimates: ``json=`` serialised, ``data=`` as is."""
    if kwargs.get("json") is not None:
        try:
            return json.dumps(kwargs["json"]).encode("utf-8")
        except (TypeError, ValueError):  # a payload only the session's serialiser knows
            return None
    data = kwargs.get("data")
    if isinstance(data, str):
        return data.encode("utf-8")
    return bytes(data) if isinstance(data, (bytes, bytearray)) else None


def _begin(session, str_or_url, kwargs: dict) -> Exchange | None:
    """An Exchange for an LLM request, None for any other."""
    try:
        url = session._build_url(str_or_url)  # the session's base_url applied, as aiohttp does
    except (ValueError, TypeError):  # not a URL: aiohttp itself says so
        return None
    path = url.path
    protocol = recognise("POST", path)
    if protocol is None or in_exchange.get():
        return None
    host = url.host or ""
    if not url.is_default_port() and url.port is not None:
        host = f"{host}:{url.port}"
    return Exchange(protocol, host, path, _request_body(kwargs), header_pairs(kwargs.get("headers")))


def _observe(exchange: Exchange, response, decompressed: bool) -> None:
    """Watch the body from now on, after replaying what arrived with the headers."""
    content = response.content
    headers = response.headers
    encoding = None if decompressed else headers.get("Content-Encoding")
    watcher = exchange.watch(response.status, headers.get("Content-Type", ""), encoding)
    # the first bytes of the body may have come in the same packet as the headers (an
    # empty body's reader, EmptyStreamReader, has no buffer)
    buffered = getattr(content, "_buffer", None)
    if buffered:
        watcher.feed(b"".join(buffered)[content._buffer_offset:])
    error = content.exception()
    if error is not None:
        watcher.end(error)
    elif content.is_eof():
        watcher.end()
    else:
        key = id(content)
        _watched[key] = watcher
        weakref.finalize(response, _abandoned, key, watcher).atexit = False


def _abandoned(key: int, watcher: StreamWatcher) -> None:
    """The response was collected before its body ended (or after: then nothing to do)."""
    if _watched.get(key) is watcher:
        _watched.pop(key, None)
        watcher.closed()


def _request_wrapper(original: Callable, response_error: type) -> Callable:
    async def _request(self, method, str_or_url, **kwargs):
        if method.upper() != "POST":  # recognise() reads POSTs only: skip the URL work
            return await original(self, method, str_or_url, **kwargs)
        try:
            exchange = _begin(self, str_or_url, kwargs)
        except Exception as exc:
            contained("request", exc)
            exchange = None
        if exchange is None:
            return await original(self, method, str_or_url, **kwargs)
        try:
            response = await original(self, method, str_or_url, **kwargs)
        except BaseException as exc:
            if isinstance(exc, response_error):  # raise_for_status: keep the status
                exchange.http_status = exc.status
            exchange.failed(exc)
            raise
        finally:
            exchange.leave()
        try:
            decompress = kwargs.get("auto_decompress")
            _observe(exchange, response, self.auto_decompress if decompress is None else decompress)
        except Exception as exc:
            contained("response", exc)
        return response
    return _request


# -- the body, as aiohttp receives it ------------------------------------------------

def _feed_data_wrapper(original: Callable) -> Callable:
    def feed_data(self, data, *args, **kwargs):
        result = original(self, data, *args, **kwargs)
        if _watched:
            watcher = _watched.get(id(self))
            if watcher is not None:
                watcher.feed(data)
        return result
    return feed_data


def _feed_eof_wrapper(original: Callable) -> Callable:
    def feed_eof(self, *args, **kwargs):
        watcher = _watched.pop(id(self), None) if _watched else None
        try:
            return original(self, *args, **kwargs)
        finally:
            if watcher is not None:
                watcher.end()
    return feed_eof


def _set_exception_wrapper(original: Callable) -> Callable:
    def set_exception(self, exc, *args, **kwargs):
        watcher = _watched.pop(id(self), None) if _watched else None
        try:
            return original(self, exc, *args, **kwargs)
        finally:
            if watcher is not None:
                watcher.end(exc)
    return set_exception


def _close_wrapper(original: Callable) -> Callable:
    """``ClientResponse.close`` / ``release``: a body closed before its end."""
    def close(self, *args, **kwargs):
        if _watched:
            watcher = _watched.pop(id(self.content), None)
            if watcher is not None:
                watcher.closed()
        return original(self, *args, **kwargs)
    return close


_STREAM_HOOKS = {"feed_data": _feed_data_wrapper, "feed_eof": _feed_eof_wrapper,
                 "set_exception": _set_exception_wrapper}
_CLOSES = ("close", "release")


def patch(module: ModuleType) -> None:
    """Wrap aiohttp's client request and its response streams; a second call changes
    nothing. An aiohttp that does not look as expected is left alone, with a warning."""
    try:
        wrap(module.ClientSession, "_request",
             lambda original: _request_wrapper(original, module.ClientResponseError))
        for name, make in _STREAM_HOOKS.items():
            wrap(module.StreamReader, name, make)
        for name in _CLOSES:
            wrap(module.ClientResponse, name, _close_wrapper)
    except Exception as exc:  # never let the user's import fail: undo what was done
        with suppress(Exception):
            unpatch(module)
        cannot_patch(module, exc)


def unpatch(module: ModuleType) -> None:
    """Restore every method, but only where it still holds tokmagic's wrapper; bodies
    still being watched are let go unrecorded."""
    unwrap(module.ClientSession, "_request")
    for name in _STREAM_HOOKS:
        unwrap(module.StreamReader, name)
    for name in _CLOSES:
        unwrap(module.ClientResponse, name)
    _watched.clear()
