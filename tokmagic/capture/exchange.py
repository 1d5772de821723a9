"""One observed HTTP exchange with an LLM API, whatever library carried it: it sees the
request go out, the response come back (whole, or piece by piece as the caller reads
it) and turns what it saw into one CallRecord. Nothing here can break the caller's
request: every failure is contained, warned about once, and recorded as "unparsed"."""
from __future__ import annotations

import copy
import itertools
import threading
import time
import weakref
from contextvars import ContextVar
from typing import Any, Callable, Iterable

from ..monitor import session
from ..protocols import Protocol, Reading, provider_for
from ..providers import deployment_of
from ..records import BACKGROUND, CallRecord, Scope, Usage
from .outcome import Known, Outcome, StreamParse, Unread, contained, framing_of

#: Set while an exchange is in flight, so that a library layered on another HTTP client
#: (or tokmagic's own requests) is not recorded a second time.
in_exchange: ContextVar[bool] = ContextVar("tokmagic_in_exchange", default=False)

#: Raw bytes of one stream kept to read later; past this, it is read as it comes, so
#: that its copy stays small.
_READ_ALONG = 1024 * 1024
#: The largest whole body tokmagic copies while the caller reads it.
_MAX_BODY = 32 * 1024 * 1024


_call_numbers = itertools.count(1)
_last_call: ContextVar[str | None] = ContextVar("tokmagic_last_call", default=None)
#: Request headers by which SDKs mark the attempts of one logical call: the idempotency
#: key the Stainless SDKs (openai, anthropic) keep across retries, and botocore's ids.
_CALL_ID_HEADERS = (b"idempotency-key", b"amz-sdk-invocation-id")
_IDENTITY_HEADERS = (*_CALL_ID_HEADERS, b"x-stainless-retry-count", b"amz-sdk-request")
#: Their lengths: a header of another length is skipped without being lowercased.
IDENTITY_NAME_LENGTHS = frozenset(map(len, _IDENTITY_HEADERS))


def header_pairs(headers: Any) -> Iterable[tuple[Any, Any]]:
    """(name, value) pairs from a mapping or a list of pairs, as HTTP libraries take them."""
    if headers is None:
        return ()
    return headers.items() if hasattr(headers, "items") else headers


def retry_identity(headers: Iterable[tuple[Any, Any]]) -> tuple[str, int]:
    """The logical call an HTTP attempt belongs to, and its attempt number (from 1), from
    the request headers as (name, value) pairs of bytes or str."""
    call_id, attempt = None, 1
    for name, value in headers:
        if len(name) not in IDENTITY_NAME_LENGTHS:  # most headers: skip without lowercasing
            continue
        name = (name if isinstance(name, bytes) else name.encode("latin-1")).lower()
        if name not in _IDENTITY_HEADERS:
            continue
        value = value.decode("latin-1") if isinstance(value, bytes) else value
        if name in _CALL_ID_HEADERS:
            call_id = value
            continue
        number = value.rpartition("attempt=")[2].partition(";")[0].strip()  # "attempt=2; max=3"
        if number.isdigit():
            attempt = int(number) + (name == b"x-stainless-retry-count")  # that one counts retries
    if call_id is None:
        # SDKs retry in the context that made the first attempt: a retry without an id
        # header continues the call this context made last
        call_id = _last_call.get() if attempt > 1 else None
        call_id = call_id or f"call-{next(_call_numbers)}"
    _last_call.set(call_id)
    return call_id, attempt


class Exchange:
    """The record-to-be of one request, created just before the request is sent."""

    __slots__ = ("protocol", "host", "path", "request_body", "start", "time", "scope", "background",
                 "done", "http_status", "stream", "token", "call_id", "attempt", "usage_headers",
                 "record", "watcher", "__weakref__")

    def __init__(self, protocol: Protocol, host: str, path: str, request_body: bytes | None,
                 headers: Iterable[tuple[Any, Any]] = ()) -> None:
        self.protocol = protocol
        self.host = host
        self.path = path
        self.request_body = request_body
        self.scope = scope = session.scope
        # a call started after its cell ended has no cell of its own; one started in the
        # cell stays that cell's, however late it ends
        self.background = scope.ended or scope is BACKGROUND
        self.record: CallRecord | None = None  # made early when its cell ended first
        self.watcher: StreamWatcher | None = None  # of a stream, once its body is read
        _in_flight.add(self)
        self.call_id, self.attempt = retry_identity(headers)
        self.time = time.time()
        self.start = time.perf_counter()
        self.done = False
        self.http_status: int | None = None
        self.stream = False
        self.usage_headers: dict[str, str | None] | None = None
        self.token = in_exchange.set(True)

    def leave(self) -> None:
        """Called in the sending context once the response headers are in (or the
        request failed), whatever else happens."""
        try:
            in_exchange.reset(self.token)
        except ValueError:  # reset from another context: nothing to undo there
            pass

    def response_headers(self, get: Callable[[str], str | None]) -> None:
        """Keep the response headers that carry usage in this wire format, if any;
        ``get`` looks one up by name, case-insensitively."""
        if self.protocol.usage_headers:
            self.usage_headers = {name: get(name) for name in self.protocol.usage_headers}

    # -- outcomes ------------------------------------------------------------------
    def failed(self, exc: BaseException) -> None:
        """The request got no response (connection refused, timeout, interrupt)."""
        self.finish(self.known("error", error=type(exc).__name__))

    def body(self, status: int, content: bytes) -> None:
        """A whole (decoded) response body."""
        self.http_status = status
        self.finish(Unread(self.protocol, self.path, self.request_body, status, None, None,
                           [content], len(content)))

    def watch(self, status: int, content_type: str, content_encoding: str | None) -> "StreamWatcher":
        """A watcher for a body the caller will read piece by piece."""
        self.http_status = status
        watcher = StreamWatcher(self, content_type, content_encoding)
        if watcher.framing is not None:
            self.watcher = watcher
        return watcher

    def forget(self) -> None:
        """Done: no longer in flight, and no cycle with its watcher left to collect."""
        _in_flight.discard(self)
        self.watcher = None

    def known(self, status: str, reading: Reading | None = None, error: str | None = None) -> Known:
        return Known(self.protocol, self.path, self.request_body, status, reading or Reading(), error)

    def finish(self, outcome: Outcome, ttft: float = float("nan"), final: bool = True) -> None:
        """Make the record, with what the response said left to read when it is read.
        ``final`` False makes it for now (a stream still open when its cell ended): the
        next call replaces its outcome, in place."""
        if self.done:
            return
        self.done = final
        if final:
            self.forget()
        try:
            outcome.headers = self.usage_headers
            latency = time.perf_counter() - self.start
            if self.record is not None:
                session.revise(self.record, lambda record: _reopen(record, outcome, latency, ttft))
                return
            scope, background = self.scope, self.background
            record = CallRecord(
                time=self.time, provider=provider_for(self.host, self.path, self.protocol),
                api=self.protocol.api, model=None, stream=self.stream, status="ok",
                http_status=self.http_status, host=self.host, deployment=deployment_of(self.path),
                latency_s=latency, ttft_s=ttft,
                cell=None if background else scope.cell, cell_id=None if background else scope.cell_id,
                tag=scope.tag, background=background,
                call_id=self.call_id, attempt=self.attempt, scope=scope)
            if final:
                self.request_body = None
            else:
                self.record = record
            _pend(record, outcome)
            session.add(record)
        except Exception as exc:
            contained("record", exc)


def _pend(record: CallRecord, outcome: Outcome) -> None:
    """Leave ``outcome`` for the record's first reader, or read it now when too many
    response bytes are held unread already."""
    if isinstance(outcome, Unread) and not outcome.hold():
        outcome.apply(record)
    else:
        record.pending = outcome


def _reopen(record: CallRecord, outcome: Outcome, latency: float, ttft: float) -> None:
    """Give a record made early its final outcome, as if made now."""
    record.status, record.model, record.usage, record.error = "ok", None, Usage(), None
    record.estimated, record.estimate_method = False, None
    record.cost_usd, record.priced = float("nan"), 0
    record.latency_s, record.ttft_s = latency, ttft
    _pend(record, outcome)


class StreamWatcher:
    """Sees each piece of a body as the caller pulls it, never reading ahead. The pieces
    are kept raw and read when the record is; a long stream (or AWS's binary framing,
    where the SDK may stop at an event without closing the body) is read as it arrives."""

    __slots__ = ("exchange", "framing", "encoding", "chunks", "size", "parse", "ttft", "broken",
                 "thread", "settled_size")

    def __init__(self, exchange: Exchange, content_type: str, content_encoding: str | None) -> None:
        self.exchange = exchange
        self.ttft = float("nan")
        self.chunks: list[bytes] = []
        self.size = 0
        self.encoding = content_encoding
        self.parse: StreamParse | None = None
        self.broken = False
        self.framing = framing_of(content_type or "") if (exchange.http_status or 0) < 400 else None
        exchange.stream = self.framing is not None
        self.settled_size = -1
        self.thread = threading.get_ident()
        if self.framing == "eventstream":
            self._read_along()

    def _break(self, what: str, exc: BaseException) -> None:
        self.broken = True
        self.chunks = []
        contained(what, exc)

    def _read_along(self) -> None:
        """From now on, read each piece as it comes (what came so far first)."""
        try:
            self.parse = StreamParse(self.exchange.protocol, self.framing, self.encoding)
            chunks, self.chunks = self.chunks, []
            for chunk in chunks:
                self.parse.feed(chunk)
        except Exception as exc:
            self._break("stream", exc)

    def feed(self, data: bytes) -> None:
        if self.ttft != self.ttft and data:
            self.ttft = time.perf_counter() - self.exchange.start
        if self.broken:
            return
        if self.parse is None:
            self.chunks.append(data)
            self.size += len(data)
            if self.framing is None:
                if self.size > _MAX_BODY:  # not an answer tokmagic can read: keep no copy
                    self.broken, self.chunks = True, []
            elif self.size > _READ_ALONG:
                self._read_along()
            return
        self.size += len(data)
        try:
            self.parse.feed(data)
            if self.parse.events.ended:
                self.end()
        except Exception as exc:
            self._break("stream", exc)

    def end(self, error: BaseException | None = None) -> None:
        """The body ended: read to its end (``error`` None), or stopped by an exception."""
        ex = self.exchange
        if ex.done:
            return
        if error is not None and self.size == self.settled_size:
            ex.done = True  # stopped with nothing read since its record was made: it stands
            ex.forget()
            self.chunks, self.broken = [], True
            return
        why = None if error is None else type(error).__name__
        outcome = self._outcome(why, final=True)
        self.chunks, self.broken = [], True  # anything read after the end is not this call's
        ex.finish(outcome, self.ttft)

    def settle(self) -> None:
        """Record the stream as interrupted now, with what arrived so far: its cell ended
        with the stream open (a loop left with break, an exception). Read on later, the
        record takes its final outcome then."""
        self.settled_size = self.size
        self.exchange.finish(self._outcome(LEFT_OPEN, final=False), self.ttft, final=False)

    def _outcome(self, why: str | None, final: bool) -> Outcome:
        """What the body said so far; when not ``final``, a copy that later reads leave be."""
        ex = self.exchange
        if self.broken:
            return ex.known("unparsed")
        if self.parse is not None:
            try:
                status, reading, error = self.parse.finish(why)
            except Exception as exc:
                contained("stream end", exc)
                return ex.known("unparsed")
            return ex.known(status, reading if final else copy.deepcopy(reading), error)
        chunks = self.chunks if final else list(self.chunks)
        return Unread(ex.protocol, ex.path, ex.request_body, ex.http_status, self.framing,
                      self.encoding, chunks, self.size, why)

    def closed(self) -> None:
        """The caller closed the body; if it had not reached the end, it was interrupted
        (but an error response is an error, however much of its body was read)."""
        if not self.exchange.done:
            self.end(None if (self.exchange.http_status or 0) >= 400 else _ClosedEarly())


class _ClosedEarly(Exception):
    """Stands for a body closed before its end."""


_ClosedEarly.__name__ = "ClosedEarly"

#: The error of a stream its cell left open, unfinished.
LEFT_OPEN = "StreamLeftOpen"

#: Exchanges not finished yet: what a scope leaves behind when it ends. Weak, so that
#: an exchange no one can finish any more (a response dropped unread) is not kept.
_in_flight: weakref.WeakSet[Exchange] = weakref.WeakSet()


def settle_open(scope: Scope) -> int:
    """Record, as interrupted, the streams opened in ``scope`` by this thread and not
    finished, so the cell's summary counts them; return how many of its calls are still
    running elsewhere (another thread or task, or awaiting an answer), which go on."""
    thread, running = threading.get_ident(), 0
    for ex in list(_in_flight):
        if ex.done or ex.record is not None or not ex.scope.within(scope):
            continue
        watcher = ex.watcher
        if watcher is None or watcher.thread != thread:
            running += 1
            continue
        try:
            watcher.settle()
        except Exception as exc:
            contained("stream left open", exc)
    return running


session.on_scope_end(settle_open)
