"""One observed HTTP exchange with an LLM API, whatever library carried it: it sees the
request go out, the response come back (whole, or piece by piece as the caller reads
it) and turns what it saw into one CallRecord. Nothing here can break the caller's
request: every failure is contained, warned about once, and recorded as "unparsed"."""
from __future__ import annotations

import itertools
import json
import time
from contextvars import ContextVar
from typing import Any, Iterable

from ..monitor import session
from ..protocols import Protocol, Reading, StreamReader, provider_for
from ..protocols.eventstream import EventStreamReader
from ..protocols.sse import NDJSONReader, SSEReader
from ..providers import deployment_of
from ..records import BACKGROUND, CallRecord, Usage
from ..resolve import Estimate
from ..warn import warn_once
from .decoding import decoder_for

#: Set while an exchange is in flight, so that a library layered on another HTTP client
#: (or tokmagic's own requests) is not recorded a second time.
in_exchange: ContextVar[bool] = ContextVar("tokmagic_in_exchange", default=False)

#: The largest non-SSE body tokmagic copies while the caller streams it.
_MAX_BODY = 32 * 1024 * 1024


def contained(what: str, exc: BaseException) -> None:
    warn_once(f"internal:{what}:{type(exc).__name__}",
              f"tokmagic: could not read an LLM response ({what}: {exc!r}); the call itself "
              "was not affected. Please report this with your SDK and its version.")


_call_numbers = itertools.count(1)
_last_call: ContextVar[str | None] = ContextVar("tokmagic_last_call", default=None)
#: Request headers by which SDKs mark the attempts of one logical call: the idempotency
#: key the Stainless SDKs (openai, anthropic) keep across retries, and botocore's ids.
_CALL_ID_HEADERS = (b"idempotency-key", b"amz-sdk-invocation-id")
_IDENTITY_HEADERS = (*_CALL_ID_HEADERS, b"x-stainless-retry-count", b"amz-sdk-request")
_IDENTITY_LENGTHS = frozenset(map(len, _IDENTITY_HEADERS))


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
        if len(name) not in _IDENTITY_LENGTHS:  # most headers: skip without lowercasing
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

    __slots__ = ("protocol", "host", "path", "request_body", "start", "time", "scope", "done",
                 "http_status", "stream", "token", "call_id", "attempt")

    def __init__(self, protocol: Protocol, host: str, path: str, request_body: bytes | None,
                 headers: Iterable[tuple[Any, Any]] = ()) -> None:
        self.protocol = protocol
        self.host = host
        self.path = path
        self.request_body = request_body
        self.scope = session.scope
        self.call_id, self.attempt = retry_identity(headers)
        self.time = time.time()
        self.start = time.perf_counter()
        self.done = False
        self.http_status: int | None = None
        self.stream = False
        self.token = in_exchange.set(True)

    def leave(self) -> None:
        """Called in the sending context once the response headers are in (or the
        request failed), whatever else happens."""
        try:
            in_exchange.reset(self.token)
        except ValueError:  # reset from another context: nothing to undo there
            pass

    # -- outcomes ------------------------------------------------------------------
    def failed(self, exc: BaseException) -> None:
        """The request got no response (connection refused, timeout, interrupt)."""
        self._finish("error", Reading(), error=type(exc).__name__)

    def body(self, status: int, content: bytes) -> None:
        """A whole (decoded) response body."""
        self.http_status = status
        self._finish(*self._read_body(content))

    def watch(self, status: int, content_type: str, content_encoding: str | None) -> "StreamWatcher":
        """A watcher for a body the caller will read piece by piece."""
        self.http_status = status
        return StreamWatcher(self, content_type, content_encoding)

    def _read_body(self, content: bytes) -> tuple[str, Reading]:
        if self.http_status and self.http_status >= 400:
            return "error", Reading()
        try:
            reading = self.protocol.read_body(json.loads(content))
            return ("unparsed", Reading()) if reading is None else ("ok", reading)
        except ValueError:
            return "unparsed", Reading()
        except Exception as exc:
            contained("body", exc)
            return "unparsed", Reading()

    def _finish(self, status: str, reading: Reading, ttft: float = float("nan"),
                error: str | None = None) -> None:
        if self.done:
            return
        self.done = True
        try:
            latency = time.perf_counter() - self.start
            usage = reading.usage
            scope = self.scope
            record = CallRecord(
                time=self.time, provider=provider_for(self.host, self.path, self.protocol),
                api=self.protocol.api, model=reading.model or self.protocol.path_model(self.path),
                stream=self.stream, status=status,
                http_status=self.http_status, host=self.host, deployment=deployment_of(self.path),
                usage=Usage() if usage is None else usage, latency_s=latency, ttft_s=ttft,
                cell=None if scope.ended else scope.cell, cell_id=None if scope.ended else scope.cell_id,
                tag=scope.tag, background=scope.ended or scope is BACKGROUND,
                call_id=self.call_id, attempt=self.attempt,
                error=reading.error or error)
            if status in ("ok", "interrupted") and (usage is None or not reading.output_final):
                record.pending = Estimate(self.protocol, self.request_body, reading)
            elif record.model is None and self.request_body:
                record.pending = Estimate(self.protocol, self.request_body, None)
            self.request_body = None
            session.add(record)
        except Exception as exc:
            contained("record", exc)


class StreamWatcher:
    """Sees each piece of a streamed body as the caller pulls it; never reads ahead."""

    __slots__ = ("exchange", "decode", "reader", "stream_reader", "body", "size", "ttft", "broken")

    def __init__(self, exchange: Exchange, content_type: str, content_encoding: str | None) -> None:
        self.exchange = exchange
        self.ttft = float("nan")
        self.body: list[bytes] | None = None
        self.size = 0
        self.stream_reader: StreamReader | None = None
        self.reader = None
        self.broken = False
        try:
            self.decode = decoder_for(content_encoding)
            ctype = (content_type or "").lower()
            binary = "vnd.amazon.eventstream" in ctype  # AWS's framing (Bedrock)
            framed = binary or "event-stream" in ctype or "ndjson" in ctype or "jsonl" in ctype
            if framed and (exchange.http_status or 0) < 400:
                exchange.stream = True
                self.stream_reader = exchange.protocol.stream_reader()
                sink = self.stream_reader.event
                self.reader = (EventStreamReader(sink) if binary else SSEReader(sink)
                               if "event-stream" in ctype else NDJSONReader(sink))
            else:
                self.body = []
        except Exception as exc:
            self._break("stream setup", exc)

    def _break(self, what: str, exc: BaseException) -> None:
        self.broken = True
        contained(what, exc)

    def feed(self, data: bytes) -> None:
        if self.ttft != self.ttft and data:
            self.ttft = time.perf_counter() - self.exchange.start
        if self.broken:
            return
        try:
            if self.decode is not None:
                data = self.decode(data)
            if self.reader is not None:
                self.reader.feed(data)
                if self.stream_reader.ended:
                    self.end()
            else:
                self.size += len(data)
                self.body.append(data)
                self.broken = self.size > _MAX_BODY
        except Exception as exc:
            self._break("stream", exc)

    def end(self, error: BaseException | None = None) -> None:
        """The body ended: read to its end (``error`` None), or stopped by an exception."""
        ex = self.exchange
        if ex.done:
            return
        if self.broken:
            ex._finish("unparsed", Reading(), self.ttft)
            return
        if self.reader is None:  # a whole body, delivered through the stream
            status, reading = ex._read_body(b"".join(self.body)) if error is None else ("interrupted", Reading())
            ex._finish(status, reading, self.ttft, error=type(error).__name__ if error else None)
            return
        cut = False
        try:
            if error is None:
                cut = bool(self.reader.close())  # the body ended inside an event
        except Exception as exc:
            self._break("stream end", exc)
            ex._finish("unparsed", Reading(), self.ttft)
            return
        reading = self.stream_reader.reading
        # a body that ended cleanly is complete unless its final count never came (an
        # Anthropic stream closed after message_start, before any message_delta)
        ok = reading.complete or (error is None and reading.output_final and not cut)
        ex._finish("ok" if ok else "interrupted", reading, self.ttft,
                   error=None if ok else type(error).__name__ if error else "IncompleteStream")

    def closed(self) -> None:
        """The caller closed the body; if it had not reached the end, it was interrupted
        (but an error response is an error, however much of its body was read)."""
        if not self.exchange.done:
            self.end(None if (self.exchange.http_status or 0) >= 400 else _ClosedEarly())


class _ClosedEarly(Exception):
    """Stands for a body closed before its end."""


_ClosedEarly.__name__ = "ClosedEarly"
