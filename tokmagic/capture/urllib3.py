"""Capture for urllib3 2.x, which requests and botocore send through.

One exchange per HTTP attempt: ``HTTPConnectionPool._make_request`` sends one request and
reads its headers, while ``urlopen`` recurses on retries and redirects. The body is
watched as it is read, by the caller or (``preload_content=True``) by tokmagic's wrapper
in urllib3's stead, through ``HTTPResponse.read``, ``read1`` and ``read_chunked`` (which
``stream()``, ``data``, ``json()`` and requests' ``iter_content`` all come down to), and
its closes. Only an LLM response is watched: its class is swapped for a subclass with
those hooks while its body is read (see patching.watching), so any other response runs
urllib3's own methods, and a request that is not one pays a test of its method (and for
a POST, of its path's end)."""
from __future__ import annotations

from contextlib import suppress
from types import ModuleType
from typing import Callable

from ..protocols import TAIL, TAILS, recognise
from .exchange import IDENTITY_NAME_LENGTHS, Exchange, StreamWatcher, contained, header_pairs, in_exchange
from .patching import POST, Hooks, cannot_patch, restore, unwrap, watching, wrap

MODULES = ("urllib3",)

#: The attribute holding an _Observed on a response whose body tokmagic watches.
_STATE = "_tokmagic_observed"
_CLOSES = ("close", "release_conn", "drain_conn")
#: The hooks of a watched response's methods (made by patch, for the urllib3 in use),
#: and the watched subclass of each response class that carried an LLM response.
_hooks: Hooks = {}
_subclasses: dict[type, type] = {}


class _Observed:
    """A watched response's exchange, and its watcher, made at the first read: only
    then is it known whether the caller reads decoded or raw bytes."""

    __slots__ = ("exchange", "watcher", "busy")

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.watcher: StreamWatcher | None = None
        self.busy = False  # inside a read: nested reads and closes are that read's business

    def watcher_for(self, response, decode_content: bool | None) -> StreamWatcher:
        if self.watcher is None:
            headers = response.headers
            # most bodies have no encoding: test for one rather than have get() raise and catch
            encoding = (headers.get("content-encoding") if "content-encoding" in headers
                        and not _decodes(response, decode_content) else None)
            self.watcher = self.exchange.watch(response.status, headers.get("content-type", ""), encoding)
        return self.watcher


def _decodes(response, decode_content: bool | None) -> bool:
    """Whether urllib3 hands out decoded bytes: when asked to, and only for an encoding
    it has a decoder for (``_decoder`` is set up by the read itself)."""
    if decode_content is None:
        decode_content = response.decode_content
    return bool(decode_content) and response._decoder is not None


def _decode_arg(args: tuple, kwargs: dict) -> bool | None:
    """``decode_content`` as passed to read / read1 / read_chunked (second parameter)."""
    if "decode_content" in kwargs:
        return kwargs["decode_content"]
    return args[1] if len(args) > 1 else None


def _request_headers(headers):
    """The request headers as (name, value) pairs for the exchange, which reads only a
    few of them. A dict or a list of pairs is passed as it is; of another mapping only the
    names are read, and the values of those that could matter. botocore's HeadersDict is
    read from its own store: each lookup in it makes, hashes and compares a key object in
    Python, which made its headers cost more than the rest of capture."""
    if headers is None or type(headers) is dict or not hasattr(headers, "keys"):
        return header_pairs(headers)
    store = getattr(headers, "_dict", None)  # botocore: {_HeaderKey: value}, the name in ._key
    if type(store) is dict:
        try:
            return [(key._key, value) for key, value in store.items() if len(key._key) in IDENTITY_NAME_LENGTHS]
        except (AttributeError, TypeError):
            pass
    return [(name, headers[name]) for name in headers if len(name) in IDENTITY_NAME_LENGTHS]


def _forget(response) -> None:
    """The body is done with: the response is urllib3's own again."""
    response.__dict__.pop(_STATE, None)
    restore(_subclasses, response)


# -- the request -----------------------------------------------------------------------

def _begin(pool, url: str, body, headers, parse_url) -> Exchange | None:
    """An Exchange for a POST to an LLM API, None for any other. Never raises."""
    try:
        query = url.find("?")
        path = url if query < 0 else url[:query]
        if path[-TAIL:] not in TAILS:  # most requests: told from the path's end alone
            return None
        host, port = pool.host, pool.port
        if not url.startswith("/"):  # an absolute URL: sent through a proxy
            parsed = parse_url(url)
            host, port, path = parsed.host or host, parsed.port, parsed.path or "/"
        protocol = recognise("POST", path)
        if protocol is None or in_exchange.get():
            return None
        if isinstance(body, str):
            body = body.encode("utf-8")
        elif not isinstance(body, bytes):
            body = None  # a file or an iterator: not read by tokmagic
        if port not in (None, 80, 443):
            host = f"{host}:{port}"
        # the headers carry botocore's invocation id and attempt number, which group retries
        return Exchange(protocol, host, path, body, _request_headers(headers))
    except Exception as exc:
        contained("request", exc)
        return None


def _sent(exchange: Exchange, preload: bool, decode_content: bool, send: Callable[[bool], object]):
    """Send an LLM request with ``send(preload_content)`` and watch its response's body.

    A preloaded body is read here rather than in the response's constructor, so that it
    goes through the watched read: a body cut short is seen as far as it came, with the
    status that came before it."""
    try:
        response = send(False)
    except BaseException as exc:
        exchange.failed(exc)
        raise
    finally:
        exchange.leave()
    try:
        exchange.response_headers(response.headers.get)
        setattr(response, _STATE, _Observed(exchange))
        response.__class__ = watching(_subclasses, type(response), _hooks)
    except Exception as exc:
        _forget(response)
        contained("response", exc)
    if preload:
        response.read(decode_content=decode_content, cache_content=True)
    return response


def _make_request_wrapper(original: Callable, parse_url) -> Callable:
    # the defaults here stand for urllib3's own, which wrap() puts in their place
    def _make_request(self, conn, method, url, body=None, headers=None, retries=None, timeout=None,
                      chunked=False, response_conn=None, preload_content=True, decode_content=True,
                      enforce_content_length=True):
        if method in POST and (exchange := _begin(self, url, body, headers, parse_url)) is not None:
            return _sent(exchange, preload_content, decode_content, lambda preload: original(
                self, conn, method, url, body, headers, retries, timeout, chunked, response_conn,
                preload, decode_content, enforce_content_length))
        return original(self, conn, method, url, body, headers, retries, timeout, chunked,
                        response_conn, preload_content, decode_content, enforce_content_length)
    return _make_request


def _make_request_generic(original: Callable, parse_url) -> Callable:
    """For a urllib3 whose ``_make_request`` takes other parameters: urlopen passes all but
    the first three by keyword."""
    def _make_request(self, conn, method, url, *args, **kwargs):
        if method in POST:
            body = kwargs["body"] if "body" in kwargs else args[0] if args else None
            headers = kwargs["headers"] if "headers" in kwargs else args[1] if len(args) > 1 else None
            exchange = _begin(self, url, body, headers, parse_url)
            if exchange is not None:
                def send(preload: bool):
                    kwargs["preload_content"] = preload
                    return original(self, conn, method, url, *args, **kwargs)
                return _sent(exchange, kwargs.get("preload_content", True), kwargs.get("decode_content", True),
                             send)
        return original(self, conn, method, url, *args, **kwargs)
    return _make_request


# -- the body, as the caller reads it ------------------------------------------------
#
# A watched response's reads and closes pass through these; once its body is done with
# (no _STATE on it) they pass straight on.

def _feed(response, state: _Observed, data: bytes, decode_content: bool | None, drained) -> None:
    """One read returned ``data``: feed it, and end the body if ``drained(response)``
    says nothing is left (``drained`` is None where the end shows otherwise)."""
    try:
        watcher = state.watcher_for(response, decode_content)
        if data:
            watcher.feed(data)
        if drained is not None and drained(response):
            _end(response, state, decode_content)
    except Exception as exc:
        contained("urllib3 read", exc)


def _end(response, state: _Observed, decode_content: bool | None, error: BaseException | None = None) -> None:
    _forget(response)
    try:
        state.watcher_for(response, decode_content).end(error)
    except Exception as exc:
        contained("urllib3 read", exc)


def _watched_read(response, state: _Observed, decode_content: bool | None, drained, read: Callable[[], bytes]):
    """One read of a watched body, by ``read()``."""
    state.busy = True
    try:
        data = read()
    except BaseException as exc:
        _end(response, state, decode_content, exc)
        raise
    finally:
        state.busy = False
    _feed(response, state, data, decode_content, drained)
    return data


def _read_wrapper(original: Callable, drained) -> Callable:
    def read(self, amt=None, decode_content=None, cache_content=False):
        state = getattr(self, _STATE, None)
        if state is None or state.busy:
            return original(self, amt, decode_content, cache_content)
        return _watched_read(self, state, decode_content, drained,
                             lambda: original(self, amt, decode_content, cache_content))
    return read


def _read1_wrapper(original: Callable, drained) -> Callable:
    def read1(self, amt=None, decode_content=None):
        state = getattr(self, _STATE, None)
        if state is None or state.busy:
            return original(self, amt, decode_content)
        return _watched_read(self, state, decode_content, drained, lambda: original(self, amt, decode_content))
    return read1


def _read_generic(original: Callable, drained) -> Callable:
    def read(self, *args, **kwargs):
        state = getattr(self, _STATE, None)
        if state is None or state.busy:
            return original(self, *args, **kwargs)
        return _watched_read(self, state, _decode_arg(args, kwargs), drained,
                             lambda: original(self, *args, **kwargs))
    return read


def _read_chunked_wrapper(original: Callable) -> Callable:
    def read_chunked(self, amt=None, decode_content=None):
        chunks = original(self, amt, decode_content)
        state = getattr(self, _STATE, None)
        if state is None or state.busy:
            return chunks
        return _watched_chunks(self, state, chunks, decode_content)
    return read_chunked


def _read_chunked_generic(original: Callable) -> Callable:
    def read_chunked(self, *args, **kwargs):
        chunks = original(self, *args, **kwargs)
        state = getattr(self, _STATE, None)
        if state is None or state.busy:
            return chunks
        return _watched_chunks(self, state, chunks, _decode_arg(args, kwargs))
    return read_chunked


def _watched_chunks(response, state: _Observed, chunks, decode_content: bool | None):
    """read_chunked's generator, each chunk seen on its way out; the body ends when the
    generator does. Closing this generator early closes urllib3's, as ``yield from``
    would, and is not an end: the caller may read on, or close the response."""
    try:
        while True:
            state.busy = True
            try:
                chunk = next(chunks)
            except StopIteration:
                _end(response, state, decode_content)
                return
            except BaseException as exc:
                _end(response, state, decode_content, exc)
                raise
            finally:
                state.busy = False
            _feed(response, state, chunk, decode_content, None)
            yield chunk
    finally:
        chunks.close()


def _watched_close(response, state: _Observed, close: Callable[[], object]):
    _forget(response)
    try:
        return close()
    finally:
        try:
            state.watcher_for(response, None).closed()
        except Exception as exc:
            contained("urllib3 close", exc)


def _close_wrapper(original: Callable) -> Callable:
    """``close``, ``release_conn``, ``drain_conn``: a body let go, maybe before its end."""
    def close(self):
        state = getattr(self, _STATE, None)
        if state is None or state.busy:
            return original(self)
        return _watched_close(self, state, lambda: original(self))
    return close


def _close_generic(original: Callable) -> Callable:
    def close(self, *args, **kwargs):
        state = getattr(self, _STATE, None)
        if state is None or state.busy:
            return original(self, *args, **kwargs)
        return _watched_close(self, state, lambda: original(self, *args, **kwargs))
    return close


def _drained_test(is_fp_closed) -> Callable[[object], bool]:
    def drained(response) -> bool:
        """Nothing is left to read: the condition urllib3's own ``stream()`` stops on."""
        decoder = response._decoder
        return (is_fp_closed(response._fp) and not len(response._decoded_buffer)
                and not (decoder and decoder.has_unconsumed_tail))
    return drained


def patch(module: ModuleType) -> None:
    """Wrap urllib3's request and response methods; a second call changes nothing. A
    urllib3 this was not written for is left alone, with a warning."""
    if not str(getattr(module, "__version__", "")).startswith("2."):
        cannot_patch(module)
        return
    try:
        drained = _drained_test(module.util.response.is_fp_closed)
        parse_url = module.util.parse_url
        _hooks.clear()
        for name, make in (("read", _read_wrapper), ("read1", _read1_wrapper)):
            _hooks[name] = (lambda original, make=make: make(original, drained),
                            lambda original: _read_generic(original, drained))
        _hooks["read_chunked"] = (_read_chunked_wrapper, _read_chunked_generic)
        for name in _CLOSES:
            _hooks[name] = (_close_wrapper, _close_generic)
        watching(_subclasses, module.response.HTTPResponse, _hooks)
        wrap(module.connectionpool.HTTPConnectionPool, "_make_request",
             lambda original: _make_request_wrapper(original, parse_url),
             lambda original: _make_request_generic(original, parse_url))
    except Exception as exc:  # never let the user's import fail: undo what was done
        with suppress(Exception):
            unpatch(module)
        cannot_patch(module, exc)


def unpatch(module: ModuleType) -> None:
    """Restore ``_make_request``, but only where it still holds tokmagic's wrapper."""
    unwrap(module.connectionpool.HTTPConnectionPool, "_make_request")
    _subclasses.clear()  # a later install makes them again, for the methods then in place
