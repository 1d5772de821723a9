"""What a response said, put into its record when the record is first read.

Parsing JSON and SSE costs more than a whole SDK's share of a call can afford, so the
call path keeps the response's raw bytes (as they came, still compressed) and this
module reads them later: when the panel, ``usage()`` or a summary first asks. Bytes held
this way are bounded; past the bound, responses are read as they arrive instead."""
from __future__ import annotations

import json
import threading

from ..protocols import Protocol, Reading
from ..protocols.base import NotACount
from ..protocols.eventstream import EventStreamReader
from ..protocols.sse import NDJSONReader, SSEReader
from ..records import CallRecord, Usage
from ..resolve import Estimate
from ..warn import warn_once
from .decoding import decoder_for

#: Raw response bytes held, over every unread record, before new ones are read at once.
MAX_HELD = 64 * 1024 * 1024
_held = 0
_held_lock = threading.Lock()


def contained(what: str, exc: BaseException) -> None:
    """Warn once of a failure to read a response: the provider's data when it is no JSON
    or no count, else tokmagic's own bug."""
    if isinstance(exc, (NotACount, json.JSONDecodeError)):
        why = f"a usage field is {exc}" if isinstance(exc, NotACount) else f"an event is not JSON ({exc})"
        warn_once(f"provider-data:{type(exc).__name__}", f"tokmagic: an LLM response could not be "
                  f"read: {why}. Its call is recorded as unparsed, tokens and cost unknown; the "
                  "call itself was not affected.")
        return
    warn_once(f"internal:{what}:{type(exc).__name__}",
              f"tokmagic: could not read an LLM response ({what}: {exc!r}); the call itself "
              "was not affected. Please report this with your SDK and its version.")


def framing_of(content_type: str) -> str | None:
    """How a response body is cut into events: "eventstream" (AWS's binary framing, as
    Bedrock streams), "sse", "ndjson", or None for a whole JSON body."""
    ctype = content_type.lower()
    if "event-stream" in ctype:
        return "sse"
    if "vnd.amazon.eventstream" in ctype:
        return "eventstream"
    if "ndjson" in ctype or "jsonl" in ctype or "stream+json" in ctype:  # the last: Cohere v1
        return "ndjson"
    return None


class StreamParse:
    """Reads a streamed body event by event: framing by content type, events by the
    wire format. Raises on what it cannot read; callers contain that."""

    __slots__ = ("decode", "framer", "events")

    def __init__(self, protocol: Protocol, framing: str, content_encoding: str | None) -> None:
        self.decode = decoder_for(content_encoding)
        self.events = protocol.stream_reader()
        sink = self.events.event
        self.framer = (EventStreamReader(sink) if framing == "eventstream"
                       else SSEReader(sink) if framing == "sse" else NDJSONReader(sink))

    def feed(self, data: bytes) -> None:
        self.framer.feed(self.decode(data) if self.decode is not None else data)

    def finish(self, error: str | None) -> tuple[str, Reading, str | None]:
        """Status, reading and error of a body that ended (``error`` None) or stopped."""
        cut = bool(self.framer.close()) if error is None else False  # ended inside an event
        reading = self.events.reading
        # a body that ended cleanly is complete unless its final count never came (an
        # Anthropic stream closed after message_start, before any message_delta)
        ok = reading.complete or (error is None and reading.output_final and not cut)
        return ("ok", reading, None) if ok else ("interrupted", reading, error or "IncompleteStream")


def read_body(protocol: Protocol, http_status: int | None, content: bytes) -> tuple[str, Reading, str | None]:
    """Status, reading and, for an answer that could not be read, why."""
    if http_status and http_status >= 400:
        return "error", Reading(), None
    try:
        body = json.loads(content)
    except ValueError:
        return "unparsed", Reading(), "not JSON"
    try:
        reading = protocol.read_body(body)
    except NotACount as exc:
        return "unparsed", Reading(), str(exc)
    return ("unparsed", Reading(), f"not a {protocol.api} answer") if reading is None else ("ok", reading, None)


def v1_deployment(path: str, request_body: bytes | None) -> str | None:
    """The deployment an Azure OpenAI v1 request (``/openai/v1/...``) calls: the request's
    ``model``, where older routes put the deployment in the path."""
    if "/openai/v1/" not in path or not request_body:
        return None
    try:
        model = json.loads(request_body).get("model")
    except (ValueError, AttributeError):
        return None
    return model if isinstance(model, str) and model else None


class Outcome:
    """A response's outcome, put into its record by ``apply`` (from resolve)."""

    __slots__ = ("protocol", "path", "request_body", "headers")

    def __init__(self, protocol: Protocol, path: str, request_body: bytes | None) -> None:
        self.protocol = protocol
        self.path = path
        self.request_body = request_body
        #: The values of the protocol's usage_headers, where it has any.
        self.headers: dict[str, str | None] | None = None

    def read(self) -> tuple[str, Reading, str | None]:
        raise NotImplementedError

    def apply(self, record: CallRecord) -> None:
        try:
            status, reading, error = self.read()
        except Exception as exc:
            contained("response", exc)
            status, reading, error = "unparsed", Reading(), None
        usage = reading.usage
        if not isinstance(reading.model, str):  # a server's junk is no model name
            reading.model = None
        if usage is None and self.headers and status == "ok":
            usage = reading.usage = self.protocol.header_usage(self.headers)
        if (usage is None and reading.model is None and not reading.output_text
                and not self.protocol.speaks(self.request_body)):
            record.ignored = True  # neither side of it is this format's
            return
        if status == "unparsed" and error:
            warn_once(f"unparsed:{self.protocol.api}:{error[:20]}", f"tokmagic: a {self.protocol.api} "
                      f"answer could not be read ({error}); its call is recorded as unparsed, tokens "
                      "and cost unknown. Your code got the answer unchanged.")
        record.status = status
        record.model = reading.model or self.protocol.path_model(self.path)
        record.usage = Usage() if usage is None else usage
        record.error = reading.error or error
        if record.provider == "azure" and record.deployment is None:
            record.deployment = v1_deployment(self.path, self.request_body)
        if status in ("ok", "interrupted") and (usage is None or not reading.output_final):
            record.pending = Estimate(self.protocol, self.request_body, reading)
        elif record.model is None and self.request_body:
            record.pending = Estimate(self.protocol, self.request_body, None)


class Known(Outcome):
    """An outcome already read on the call path (a failed request, a stream read along)."""

    __slots__ = ("status", "reading", "error")

    def __init__(self, protocol: Protocol, path: str, request_body: bytes | None,
                 status: str, reading: Reading, error: str | None = None) -> None:
        super().__init__(protocol, path, request_body)
        self.status, self.reading, self.error = status, reading, error

    def read(self) -> tuple[str, Reading, str | None]:
        return self.status, self.reading, self.error


class Unread(Outcome):
    """A response's raw bytes, as the HTTP library read them, to be read later.

    ``framing`` None is a whole JSON body; ``error`` names what stopped a stream early."""

    __slots__ = ("http_status", "framing", "encoding", "chunks", "error", "size", "held")

    def __init__(self, protocol: Protocol, path: str, request_body: bytes | None,
                 http_status: int | None, framing: str | None, encoding: str | None,
                 chunks: list[bytes], size: int, error: str | None = None) -> None:
        super().__init__(protocol, path, request_body)
        self.http_status, self.framing, self.encoding = http_status, framing, encoding
        self.chunks, self.size, self.error = chunks, size, error
        self.held = 0  # bytes counted in the bound, to be given back once read or dropped

    def hold(self) -> bool:
        """Count this response's bytes as held; False when the bound is reached, and
        the response should be read now."""
        global _held
        with _held_lock:
            if _held + self.size > MAX_HELD:
                return False
            _held += self.size
            self.held = self.size
        return True

    def release(self) -> None:
        global _held
        if self.held:
            with _held_lock:
                _held -= self.held
            self.held = 0

    def __del__(self) -> None:  # a record dropped unread (%llm_reset) holds nothing more
        self.release()

    def read(self) -> tuple[str, Reading, str | None]:
        chunks, self.chunks = self.chunks, []
        if self.framing is None:
            if self.error is not None:
                return "interrupted", Reading(), self.error
            decode = decoder_for(self.encoding)
            body = b"".join(chunks)
            return read_body(self.protocol, self.http_status, decode(body) if decode else body)
        parse = StreamParse(self.protocol, self.framing, self.encoding)
        for chunk in chunks:
            parse.feed(chunk)
        return parse.finish(self.error)

    def apply(self, record: CallRecord) -> None:
        self.release()
        super().apply(record)
