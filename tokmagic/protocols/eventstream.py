"""An incremental reader for AWS's binary event stream framing
(``application/vnd.amazon.eventstream``), in which Bedrock streams its responses.

Each message is: a 12-byte prelude (total length, headers length, CRC32 of those eight
bytes), typed headers, a payload and a CRC32 of all that precedes it. Bytes may arrive
cut anywhere, so a message is read only once all of it is in. Both checksums are
checked: a mismatch means the reader has lost the framing, and reading stops with a
ValueError rather than guessing where the next message starts."""
from __future__ import annotations

import struct
import zlib

from .sse import EventSink

_PRELUDE = 12
_CRC = 4
#: Larger than any message AWS sends (its own limit is 16 MiB of payload): a length
#: beyond this is corruption, and buffering for it would only hold memory.
_MAX_MESSAGE = 32 * 1024 * 1024
#: Bytes taken by the value of each fixed-size header type (true, false, byte, short,
#: int, long, timestamp, uuid); types 6 (bytes) and 7 (string) carry a 2-byte length.
_FIXED_SIZE = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


def _headers(message: bytes, pos: int, end: int) -> dict[str, str]:
    """The string-valued headers of a message; other types are skipped over."""
    found: dict[str, str] = {}
    while pos < end:
        size = message[pos]
        name = message[pos + 1:pos + 1 + size].decode("utf-8", "replace")
        kind = message[pos + 1 + size]
        pos += 2 + size
        if kind in (6, 7):
            (length,) = struct.unpack_from(">H", message, pos)
            if kind == 7:
                found[name] = message[pos + 2:pos + 2 + length].decode("utf-8", "replace")
            pos += 2 + length
        elif kind in _FIXED_SIZE:
            pos += _FIXED_SIZE[kind]
        else:
            raise ValueError(f"eventstream: unknown header type {kind}")
    if pos != end:
        raise ValueError("eventstream: headers overrun their length")
    return found


class EventStreamReader:
    """Turns bytes into (name, data) pairs for a StreamReader, as the SSE reader does.

    An event gives (its ``:event-type``, its payload as text). A modelled exception
    gives (``"exception:" + :exception-type``, its payload); a service error gives
    (``"error:" + :error-code``, its ``:error-message``)."""

    __slots__ = ("_buffer", "_sink")

    def __init__(self, sink: EventSink) -> None:
        self._buffer = bytearray()
        self._sink = sink

    def feed(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        try:
            while len(buffer) - start >= _PRELUDE:
                total, headers_length, prelude_crc = struct.unpack_from(">III", buffer, start)
                if zlib.crc32(buffer[start:start + 8]) != prelude_crc:
                    raise ValueError("eventstream: prelude checksum mismatch")
                if not _PRELUDE + _CRC <= total <= _MAX_MESSAGE or headers_length > total - _PRELUDE - _CRC:
                    raise ValueError(f"eventstream: impossible lengths {total}/{headers_length}")
                if len(buffer) - start < total:
                    break
                message = bytes(buffer[start:start + total])
                start += total
                (crc,) = struct.unpack_from(">I", message, total - _CRC)
                if zlib.crc32(message[:-_CRC]) != crc:
                    raise ValueError("eventstream: message checksum mismatch")
                self._dispatch(_headers(message, _PRELUDE, _PRELUDE + headers_length),
                               message[_PRELUDE + headers_length:-_CRC])
        finally:
            del buffer[:start]

    def close(self) -> bool:
        """End of body: True if it ended inside a message (a cut-off stream)."""
        cut = bool(self._buffer)
        self._buffer.clear()
        return cut

    def _dispatch(self, headers: dict[str, str], payload: bytes) -> None:
        kind = headers.get(":message-type", "event")
        if kind == "event":
            self._sink(headers.get(":event-type"), payload.decode("utf-8", "replace"))
        elif kind == "exception":
            self._sink("exception:" + headers.get(":exception-type", ""), payload.decode("utf-8", "replace"))
        elif kind == "error":
            self._sink("error:" + headers.get(":error-code", ""), headers.get(":error-message", ""))
