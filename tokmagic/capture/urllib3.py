"""Capture for urllib3 2.x, which requests and botocore send through.

One exchange per HTTP attempt: ``HTTPConnectionPool._make_request`` sends one request and
reads its headers, while ``urlopen`` recurses on retries and redirects. The body is
watched as it is read, by the caller or (``preload_content=True``) by tokmagic's wrapper
in urllib3's stead, through ``HTTPResponse.read``, ``read1`` and ``read_chunked`` (which
``stream()``, ``data``, ``json()`` and requests' ``iter_content`` all come down to).
Those are patched on the class, so a response that is not an LLM call pays one attribute
lookup per read."""
from __future__ import annotations

from contextlib import suppress
from types import ModuleType
from typing import Callable

from ..protocols import recognise
from .exchange import Exchange, StreamWatcher, contained, header_pairs, in_exchange
from .patching import cannot_patch, unwrap, wrap

MODULES = ("urllib3",)

#: The attribute holding an _Observed on a response whose body tokmagic watches.
_STATE = "_tokmagic_observed"
_READS = ("read", "read1")
_CLOSES = ("close", "release_conn", "drain_conn")


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
            encoding = None if _decodes(response, decode_content) else headers.get("content-encoding")
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


def _forget(response) -> None:
    response.__dict__.pop(_STATE, None)


# -- the request -----------------------------------------------------------------------

def _begin(pool, url: str, args: tuple, kwargs: dict, parse_url) -> Exchange | None:
    """An Exchange for an LLM request, None for any other."""
    host, port = pool.host, pool.port
    if not url.startswith("/"):  # an absolute URL: sent through a proxy
        parsed = parse_url(url)
        host, port, url = parsed.host or host, parsed.port, parsed.path or "/"
    path = url.split("?", 1)[0]
    protocol = recognise("POST", path)
    if protocol is None or in_exchange.get():
        return None
    body = kwargs["body"] if "body" in kwargs else args[0] if args else None
    if isinstance(body, str):
        body = body.encode("utf-8")
    elif not isinstance(body, bytes):
        body = None  # a file or an iterator: not read by tokmagic
    headers = kwargs["headers"] if "headers" in kwargs else args[1] if len(args) > 1 else None
    if port not in (None, 80, 443):
        host = f"{host}:{port}"
    # the headers carry botocore's invocation id and attempt number, which group retries
    return Exchange(protocol, host, path, body, header_pairs(headers))


def _make_request_wrapper(original: Callable, parse_url) -> Callable:
    def _make_request(self, conn, method, url, *args, **kwargs):
        if method.upper() != "POST":  # recognise() reads POSTs only: skip the URL work
            return original(self, conn, method, url, *args, **kwargs)
        try:
            exchange = _begin(self, url, args, kwargs, parse_url)
        except Exception as exc:
            contained("request", exc)
            exchange = None
        if exchange is None:
            return original(self, conn, method, url, *args, **kwargs)
        # urlopen passes these by keyword. A preloaded body is read here rather than in
        # the response's constructor, so that it goes through the watched read: a body
        # cut short is seen as far as it came, with the status that came before it.
        preload = kwargs.get("preload_content", True)
        kwargs["preload_content"] = False
        try:
            response = original(self, conn, method, url, *args, **kwargs)
        except BaseException as exc:
            exchange.failed(exc)
            raise
        finally:
            exchange.leave()
        setattr(response, _STATE, _Observed(exchange))
        if preload:
            response.read(decode_content=kwargs.get("decode_content", True), cache_content=True)
        return response
    return _make_request


# -- the body, as the caller reads it ------------------------------------------------

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


def _read_wrapper(original: Callable, drained) -> Callable:
    def read(self, *args, **kwargs):
        state = getattr(self, _STATE, None)
        if state is None or state.busy:
            return original(self, *args, **kwargs)
        decode_content = _decode_arg(args, kwargs)
        state.busy = True
        try:
            data = original(self, *args, **kwargs)
        except BaseException as exc:
            _end(self, state, decode_content, exc)
            raise
        finally:
            state.busy = False
        _feed(self, state, data, decode_content, drained)
        return data
    return read


def _read_chunked_wrapper(original: Callable) -> Callable:
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


def _close_wrapper(original: Callable) -> Callable:
    def close(self, *args, **kwargs):
        state = getattr(self, _STATE, None)
        if state is None or state.busy:
            return original(self, *args, **kwargs)
        _forget(self)
        try:
            return original(self, *args, **kwargs)
        finally:
            try:
                state.watcher_for(self, None).closed()
            except Exception as exc:
                contained("urllib3 close", exc)
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
        wrap(module.connectionpool.HTTPConnectionPool, "_make_request",
             lambda original: _make_request_wrapper(original, parse_url))
        response = module.response.HTTPResponse
        for name in _READS:
            wrap(response, name, lambda original: _read_wrapper(original, drained))
        wrap(response, "read_chunked", _read_chunked_wrapper)
        for name in _CLOSES:
            wrap(response, name, _close_wrapper)
    except Exception as exc:  # never let the user's import fail: undo what was done
        with suppress(Exception):
            unpatch(module)
        cannot_patch(module, exc)


def unpatch(module: ModuleType) -> None:
    """Restore every method, but only where it still holds tokmagic's wrapper."""
    unwrap(module.connectionpool.HTTPConnectionPool, "_make_request")
    for name in (*_READS, "read_chunked", *_CLOSES):
        unwrap(module.response.HTTPResponse, name)
