"""The session monitor: holds every call record, knows the current scope (cell and tag),
adds up totals and tells listeners. Thread-safe; no display code."""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator

from .records import BACKGROUND, CallRecord, Scope, Usage

#: The scope of the running context; None where none was set (then the thread decides).
_scope: ContextVar[Scope | None] = ContextVar("tokmagic_scope", default=None)


@dataclass
class Summary:
    """Totals over a set of records. ``cost_usd`` adds the priced calls only;
    ``unpriced`` counts the calls whose price is unknown, so a total is never
    silently too low."""

    calls: int = 0
    attempts: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    unpriced: int = 0
    estimated: int = 0
    errors: int = 0
    interrupted: int = 0
    unparsed: int = 0
    latency_s: float = 0.0
    tag: str | None = None
    _call_ids: set = field(default_factory=set, repr=False, compare=False)

    def add(self, r: CallRecord) -> None:
        """Count one record: an attempt always, a call unless it retries one counted."""
        self.attempts += 1
        if r.call_id is None or r.call_id not in self._call_ids:
            self.calls += 1
            if r.call_id is not None:
                self._call_ids.add(r.call_id)
        u = self.usage
        u.input_tokens += r.usage.input_tokens
        u.cached_input_tokens += r.usage.cached_input_tokens
        u.cache_write_tokens += r.usage.cache_write_tokens
        u.output_tokens += r.usage.output_tokens
        u.reasoning_tokens += r.usage.reasoning_tokens
        if math.isnan(r.cost_usd):
            if r.status != "error":
                self.unpriced += 1
        else:
            self.cost_usd += r.cost_usd
        self.estimated += r.estimated
        self.errors += r.status == "error"
        self.interrupted += r.status == "interrupted"
        self.unparsed += r.status == "unparsed"
        if not math.isnan(r.latency_s):
            self.latency_s += r.latency_s

    @classmethod
    def of(cls, records: Iterable[CallRecord], tag: str | None = None) -> "Summary":
        s = cls(tag=tag)
        for r in records:
            s.add(r)
        return s

    def __str__(self) -> str:
        from .report import summary_text

        return summary_text(self)

    def _repr_pretty_(self, p, cycle) -> None:  # IPython's pretty printer
        p.text(str(self))

    def _repr_html_(self) -> str:
        from .report import summary_html

        return summary_html(self)


Listener = Callable[[CallRecord], None]


class Monitor:
    """Every call of the session, in arrival order.

    ``add`` is on the user's call path, so it only appends and notifies; pricing and
    local estimates run when records are first read (``records``, ``summary``).
    """

    def __init__(self) -> None:
        # Re-entrant: a stream dropped unread is recorded from the garbage collector,
        # which may run while this thread is inside add().
        self._lock = threading.RLock()
        self._resolve_lock = threading.Lock()
        self._records: list[CallRecord] = []
        self._unresolved: list[CallRecord] = []
        self._listeners: list[Listener] = []
        self._main_scope = Scope()

    # -- scope -----------------------------------------------------------------
    @property
    def scope(self) -> Scope:
        """Where a call starting here comes from: the context's scope (set for a cell or
        a track() block, inherited by the asyncio tasks and executor jobs started in it),
        else the scope of whoever started this thread, else the main thread's."""
        scope = _scope.get()
        if scope is not None:
            return scope
        thread = threading.current_thread()
        scope = getattr(thread, "tokmagic_scope", None)  # stamped by capture.threads
        if scope is not None:
            return scope
        return self._main_scope if thread is threading.main_thread() else BACKGROUND

    @scope.setter
    def scope(self, value: Scope) -> None:
        _scope.set(value)
        if threading.current_thread() is threading.main_thread():
            self._main_scope = value

    @contextmanager
    def scoped(self, **changes) -> Iterator[Scope]:
        """Attribute calls made inside the block to a cell and/or tag; calls made after it
        by threads it started are background calls."""
        previous = self.scope
        scope = self.scope = replace(previous, ended=False, **changes)
        try:
            yield scope
        finally:
            scope.ended = True
            self.scope = previous

    # -- writing ---------------------------------------------------------------
    def add(self, record: CallRecord) -> None:
        with self._lock:
            self._records.append(record)
            self._unresolved.append(record)
            listeners = self._listeners
        for listener in listeners:
            try:
                listener(record)
            except Exception as exc:  # a display bug must not break the user's call
                from .warn import warn_once

                warn_once("listener", f"tokmagic: a usage listener failed ({exc!r}); it keeps running.")

    def reset(self) -> None:
        with self._lock:
            self._records = []
            self._unresolved = []

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = [*self._listeners, listener]

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock:
            # Equality, not identity: each access to a bound method makes a new object.
            self._listeners = [x for x in self._listeners if x != listener]

    # -- reading ---------------------------------------------------------------
    def records(self) -> list[CallRecord]:
        """A snapshot of all records, priced and with estimates filled in."""
        # One reader resolves at a time and every reader waits for it, so none returns a
        # record another is still pricing (the live panel reads from its own thread). The
        # snapshot is taken with the records to resolve: calls landing meanwhile from
        # other threads wait for the next reader instead of slipping in unpriced.
        with self._resolve_lock:
            with self._lock:
                todo, self._unresolved = self._unresolved, []
                snapshot = list(self._records)
            if todo:
                from .resolve import resolve

                for record in todo:
                    resolve(record)
        return snapshot

    def summary(self, where: Callable[[CallRecord], bool] | None = None, tag: str | None = None) -> Summary:
        records = self.records()
        return Summary.of((r for r in records if where is None or where(r)), tag=tag)


#: The session's monitor: what capture writes to and every display reads.
session = Monitor()
