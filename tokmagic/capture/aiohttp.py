"""Capture for aiohttp's client: one exchange per ``ClientSession._request`` (every
request method comes down to it), and the response body watched as aiohttp fills the
response's ``StreamReader`` (``feed_data``, ``feed_eof``, ``set_exception``).

A request that is not a POST costs one call and one test; a POST, working out its URL's
path too. Only a POST to an LLM API gets a coroutine of tokmagic's around aiohttp's.

Only an LLM response's reader and the response itself are watched: while its body
arrives, each has its class swapped for a subclass whose hook methods watch it (the
subclass adds no slots, so the layout is the same), and gets its own class back when the
body ends. Every other response, and every body aiohttp serves, runs aiohttp's methods
untouched. A StreamReader has ``__slots__`` and no weak references, so the watched ones
are kept in a dict by id. An entry goes at the end of the body, at an error, when the
response is closed or released, or when the response is collected unfinished: the
response holds its reader, so a weak reference to it, kept in the entry, removes the
entry before the reader can go and its id be reused."""
from __future__ import annotations

import inspect
import json
import weakref
from contextlib import suppress
from types import ModuleType
from typing import Callable

from ..protocols import TAIL, TAILS, Protocol, recognise
from .exchange import Exchange, StreamWatcher, contained, header_pairs, in_exchange
from .patching import POST, Hooks, cannot_patch, restore, unwrap, watching, wrap

MODULES = ("aiohttp",)

#: id(StreamReader) -> its watcher, and a weak reference to its response whose callback
#: drops the entry, for bodies still arriving.
_watched: dict[int, tuple[StreamWatcher, weakref.ref]] = {}


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


def _target(session, str_or_url):
    """The URL of a POST and its wire format, if it goes to an LLM API; else None.
    Never raises."""
    try:
        url = session._build_url(str_or_url)  # the session's base_url applied, as aiohttp does
        protocol = recognise("POST", url.path)
    except (ValueError, TypeError):  # not a URL: aiohttp itself says so
        return None
    except Exception as exc:
        contained("request", exc)
        return None
    return None if protocol is None else (url, protocol)


def _begin(url, protocol: Protocol, kwargs: dict) -> Exchange | None:
    """The exchange of a request to an LLM API, unless a layer above records it."""
    if in_exchange.get():
        return None
    host = url.host or ""
    if not url.is_default_port() and url.port is not None:
        host = f"{host}:{url.port}"
    return Exchange(protocol, host, url.path, _request_body(kwargs), header_pairs(kwargs.get("headers")))


def _observe(exchange: Exchange, response, decompressed: bool) -> None:
    """Watch the body from now on, after replaying what arrived with the headers."""
    content = response.content
    headers = response.headers
    exchange.response_headers(headers.get)
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
        # a plain weak reference, kept alive by the entry, costs a quarter of a finalizer
        _watched[key] = (watcher, weakref.ref(response, lambda ref: _abandoned(key, ref)))
        try:
            content.__class__ = watching(_subclasses, type(content), _STREAM_HOOKS)
            response.__class__ = watching(_subclasses, type(response), _CLOSE_HOOKS)
        except TypeError:  # a reader or response of another layout: not watched
            _unwatch(content)
            exchange.finish(exchange.known("unparsed"))
            raise


#: Watched subclass of each class whose instances carried an LLM response so far.
_subclasses: dict[type, type] = {}


def _abandoned(key: int, ref: weakref.ref) -> None:
    """The response was collected before its body ended."""
    entry = _watched.get(key)
    if entry is not None and entry[1] is ref:
        del _watched[key]
        entry[0].closed()


def _unwatch(reader) -> StreamWatcher | None:
    """The watcher of a body that ends now, if it is watched; the reader and its response
    are plain aiohttp objects again."""
    entry = _watched.pop(id(reader), None)
    if entry is None:
        return None
    restore(_subclasses, reader)
    response = entry[1]()
    if response is not None:
        restore(_subclasses, response)
    return entry[0]


async def _captured(request, session, kwargs: dict, target, response_error: type):
    """``request``, aiohttp's coroutine for a POST to an LLM API, recorded. Its exchange
    begins when it is awaited, in the awaiting task's context, as aiohttp's own work does."""
    try:
        exchange = _begin(*target, kwargs)
    except Exception as exc:
        contained("request", exc)
        exchange = None
    if exchange is None:
        return await request
    try:
        response = await request
    except BaseException as exc:
        if isinstance(exc, response_error):  # raise_for_status: keep the status
            exchange.http_status = exc.status
        exchange.failed(exc)
        raise
    finally:
        exchange.leave()
    try:
        decompress = kwargs.get("auto_decompress")
        _observe(exchange, response, session.auto_decompress if decompress is None else decompress)
    except Exception as exc:
        contained("response", exc)
    return response


def _request_wrapper(original: Callable, response_error: type) -> Callable:
    """``ClientSession._request``, a coroutine function, wrapped by a plain function that
    returns aiohttp's own coroutine, made at once (so that bad arguments raise where they
    would without tokmagic), inside one of tokmagic's for a POST to an LLM API."""
    def _request(self, method, str_or_url, **kwargs):
        request = original(self, method, str_or_url, **kwargs)
        if method not in POST:
            return request
        if type(str_or_url) is str:  # most POSTs: told from the path's end, here, at once
            query = str_or_url.find("?")
            if (str_or_url if query < 0 else str_or_url[:query])[-TAIL:] not in TAILS:
                return request
        target = _target(self, str_or_url)
        return request if target is None else _captured(request, self, kwargs, target, response_error)
    mark = getattr(inspect, "markcoroutinefunction", None)  # Python 3.12+
    return _request if mark is None else mark(_request)


# -- the body, as aiohttp receives it ------------------------------------------------
#
# The hooks of the watched subclasses: they run for LLM responses only.

def _feed_data_wrapper(original: Callable) -> Callable:
    def feed_data(self, data, size=0):
        result = original(self, data, size)
        _fed(self, data)
        return result
    return feed_data


def _feed_data_generic(original: Callable) -> Callable:
    def feed_data(self, data, *args, **kwargs):
        result = original(self, data, *args, **kwargs)
        _fed(self, data)
        return result
    return feed_data


def _fed(reader, data: bytes) -> None:
    entry = _watched.get(id(reader))
    if entry is not None:
        entry[0].feed(data)


def _feed_eof_wrapper(original: Callable) -> Callable:
    def feed_eof(self):
        return _ended(_unwatch(self), None, lambda: original(self))
    return feed_eof


def _feed_eof_generic(original: Callable) -> Callable:
    def feed_eof(self, *args, **kwargs):
        return _ended(_unwatch(self), None, lambda: original(self, *args, **kwargs))
    return feed_eof


def _set_exception_wrapper(original: Callable) -> Callable:
    def set_exception(self, exc, exc_cause=None):
        return _ended(_unwatch(self), exc, lambda: original(self, exc, exc_cause))
    return set_exception


def _set_exception_generic(original: Callable) -> Callable:
    def set_exception(self, exc, *args, **kwargs):
        return _ended(_unwatch(self), exc, lambda: original(self, exc, *args, **kwargs))
    return set_exception


def _ended(watcher: StreamWatcher | None, error: BaseException | None, call: Callable[[], object]):
    """The body ends (``error`` None) or fails, by ``call()``: the watcher, if any, ends after it."""
    try:
        return call()
    finally:
        if watcher is not None:
            watcher.end(error)


def _close_wrapper(original: Callable) -> Callable:
    """``ClientResponse.close`` / ``release``: a body closed before its end."""
    def close(self):
        _closed(self)
        return original(self)
    return close


def _close_generic(original: Callable) -> Callable:
    def close(self, *args, **kwargs):
        _closed(self)
        return original(self, *args, **kwargs)
    return close


def _closed(response) -> None:
    watcher = _unwatch(response.content)
    if watcher is not None:
        watcher.closed()


_STREAM_HOOKS: Hooks = {"feed_data": (_feed_data_wrapper, _feed_data_generic),
                 "feed_eof": (_feed_eof_wrapper, _feed_eof_generic),
                 "set_exception": (_set_exception_wrapper, _set_exception_generic)}
_CLOSE_HOOKS: Hooks = {name: (_close_wrapper, _close_generic) for name in ("close", "release")}


def patch(module: ModuleType) -> None:
    """Wrap aiohttp's client request, and make the watched reader and response classes;
    a second call changes nothing. An aiohttp that does not look as expected is left
    alone, with a warning."""
    try:
        watching(_subclasses, module.StreamReader, _STREAM_HOOKS)
        watching(_subclasses, module.ClientResponse, _CLOSE_HOOKS)
        wrap(module.ClientSession, "_request",
             lambda original: _request_wrapper(original, module.ClientResponseError))
    except Exception as exc:  # never let the user's import fail: undo what was done
        with suppress(Exception):
            unpatch(module)
        cannot_patch(module, exc)


def unpatch(module: ModuleType) -> None:
    """Restore ``_request``, but only where it still holds tokmagic's wrapper; bodies
    still being watched are let go unrecorded."""
    unwrap(module.ClientSession, "_request")
    _watched.clear()
    _subclasses.clear()  # a later install makes them again, for the methods then in place
