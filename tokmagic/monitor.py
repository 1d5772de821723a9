"""The session monitor: holds every call record, knows the current scope (cell and tag),
adds up totals and tells listeners. Thread-safe; no display code."""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Iterator

from . import pricing
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
    #: Calls of a cell or block still running when it ended (another thread's, a task's):
    #: not in these totals; they show in usage() once they end.
    running: int = 0
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
        # Re-entrant: a stream dropped unread is recorded (or revised) from the garbage
        # collector, which may run while this thread is inside add() or records().
        self._lock = threading.RLock()
        self._resolve_lock = threading.RLock()
        self._records: list[CallRecord] = []
        self._unresolved: list[CallRecord] = []
        self._listeners: list[Listener] = []
        self._scope_end_hooks: list[Callable[[Scope], int | None]] = []
        self._main_scope = Scope()
        #: Bumped whenever records already handed out change (a reset, a revision, new
        #: prices): a reader that folds records incrementally starts over.
        self.generation = 0
        self._pricing_generation = 0

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
        scope = self.scope = replace(previous, ended=False, parent=previous, **changes)
        try:
            yield scope
        finally:
            self.end_scope(scope)
            self.scope = previous

    def end_scope(self, scope: Scope) -> int:
        """Mark ``scope`` over (a cell or block ended) and tell the scope-end hooks, once;
        return how many of its calls they say are still running."""
        if scope.ended:
            return 0
        scope.ended = True
        running = 0
        for hook in self._scope_end_hooks:
            try:
                running += hook(scope) or 0
            except Exception as exc:
                from .warn import warn_once

                warn_once("scope-end", f"tokmagic: could not settle the calls of an ended cell "
                                       f"({exc!r}); they are recorded when their streams end.")
        return running

    def on_scope_end(self, hook: Callable[[Scope], int | None]) -> None:
        """Call ``hook(scope)`` whenever a scope ends, in the thread that ended it (capture
        records the streams the scope left open, and counts its calls still running)."""
        self._scope_end_hooks.append(hook)

    @contextmanager
    def tracked(self, tag: str | None = None) -> Iterator[tuple[Summary, list[CallRecord]]]:
        """Run the block in a scope tagged ``tag``; yields its Summary, filled in when the
        block ends, and the list of its records. A call counts when it was made in the
        block (or a thread, task or scope it started), whatever its tag; calls of other
        cells that land meanwhile do not."""
        result = Summary(tag=tag)
        mine: dict[int, CallRecord] = {}  # by id: a revised record is notified again
        with self.scoped(tag=tag) as scope:
            def collect(record: CallRecord) -> None:
                if record.scope is not None and record.scope.within(scope):
                    mine[id(record)] = record

            self.subscribe(collect)
            records: list[CallRecord] = []
            try:
                yield result, records
            finally:
                # streams it left open are recorded, and collected; calls still running are not
                result.running = self.end_scope(scope)
                self.unsubscribe(collect)
                self.records()  # prices and estimates, done once the block is over
                records.extend(r for r in mine.values() if not r.ignored)
                for record in records:
                    result.add(record)

    # -- writing ---------------------------------------------------------------
    def add(self, record: CallRecord) -> None:
        with self._lock:
            self._records.append(record)
            self._unresolved.append(record)
        self._notify(record)

    def revise(self, record: CallRecord, change: Callable[[CallRecord], None]) -> None:
        """Change a record already added (a stream recorded as interrupted when its cell
        ended, that the caller then read on): ``change`` runs while no reader resolves,
        and the record is resolved again when next read."""
        with self._resolve_lock:
            change(record)
            with self._lock:
                self._unresolved.append(record)
                self.generation += 1
        self._notify(record)

    def _notify(self, record: CallRecord) -> None:
        for listener in self._listeners:
            try:
                listener(record)
            except Exception as exc:  # a display bug must not break the user's call
                from .warn import warn_once

                warn_once("listener", f"tokmagic: a usage listener failed ({exc!r}); it keeps running.")

    def reset(self) -> None:
        with self._lock:
            self._records = []
            self._unresolved = []
            self.generation += 1

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
                if pricing.generation != self._pricing_generation:  # prices set since: reprice all
                    self._pricing_generation = pricing.generation
                    todo = snapshot
                    self.generation += 1
            if todo:
                from .resolve import resolve

                for record in todo:
                    resolve(record)
                if any(record.ignored for record in todo):  # no LLM calls after all
                    with self._lock:
                        self._records = [r for r in self._records if not r.ignored]
                        self.generation += 1
                    snapshot = [r for r in snapshot if not r.ignored]
        return snapshot

    def summary(self, where: Callable[[CallRecord], bool] | None = None, tag: str | None = None) -> Summary:
        records = self.records()
        return Summary.of((r for r in records if where is None or where(r)), tag=tag)


#: The session's monitor: what capture writes to and every display reads.
session = Monitor()
