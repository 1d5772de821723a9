"""Incremental readers for the two stream framings LLM APIs use: Server-Sent Events and
newline-delimited JSON. Bytes may arrive cut at any point, even inside a UTF-8 character;
lines are decoded only once complete."""
from __future__ import annotations

from typing import Callable

EventSink = Callable[[str | None, str], None]


class LineSplitter:
    """Cuts a byte stream into lines (``\\n``, ``\\r\\n`` or ``\\r``), keeping the tail."""

    __slots__ = ("_tail", "_cr")

    def __init__(self) -> None:
        self._tail = b""
        self._cr = False

    def feed(self, data: bytes) -> list[str]:
        if self._cr and data.startswith(b"\n"):  # a \r\n cut between two reads
            data = data[1:]
        self._cr = data.endswith(b"\r")
        buf = self._tail + data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, self._tail = buf.split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines]

    def flush(self) -> list[str]:
        tail, self._tail = self._tail, b""
        return [tail.decode("utf-8", "replace")] if tail else []


class SSEReader:
    """Turns bytes into (event name, data) pairs, as the EventSource spec dispatches them."""

    __slots__ = ("_lines", "_sink", "_event", "_data")

    def __init__(self, sink: EventSink) -> None:
        self._lines = LineSplitter()
        self._sink = sink
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, data: bytes) -> None:
        for line in self._lines.feed(data):
            self._line(line)

    def close(self) -> bool:
        """End of body: an event without its closing blank line is dropped, as the
        EventSource spec and the SDKs do (it is a cut-off event). True if one was."""
        cut = bool(self._lines.flush() or self._data)
        self._event, self._data = None, []
        return cut

    def _line(self, line: str) -> None:
        if not line:
            if self._data:
                self._sink(self._event, "\n".join(self._data))
            self._event, self._data = None, []
        elif line.startswith("data:"):
            self._data.append(line[6:] if line.startswith("data: ") else line[5:])
        elif line.startswith("event:"):
            self._event = line[6:].strip()


class NDJSONReader:
    """Turns bytes into one data string per non-empty line."""

    __slots__ = ("_lines", "_sink")

    def __init__(self, sink: EventSink) -> None:
        self._lines = LineSplitter()
        self._sink = sink

    def feed(self, data: bytes) -> None:
        for line in self._lines.feed(data):
            if line.strip():
                self._sink(None, line)

    def close(self) -> None:
        for line in self._lines.flush():
            if line.strip():
                self._sink(None, line)
