"""What the live panel shows and when it redraws, with no display code: running totals
read from the session monitor's snapshots, and a throttle that turns any rate of calls
into a few redraws a second. Nothing here imports IPython or ipywidgets, so the numbers
and the timing are testable on their own, with a fake clock."""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from ..monitor import Monitor, Summary
from ..records import CallRecord
from ..warn import warn_once

#: At most this many redraws a second while calls arrive (a final one comes on top).
UPDATES_PER_S = 4


@dataclass(frozen=True)
class LastCall:
    """The facts of the most recent call that the panel repeats."""

    model: str | None
    input_tokens: int
    output_tokens: int
    latency_s: float
    tokens_per_s: float
    status: str

    @classmethod
    def of(cls, r: CallRecord) -> "LastCall":
        return cls(r.model, r.usage.input_tokens, r.usage.output_tokens, r.latency_s,
                   r.tokens_per_s, r.status)


@dataclass
class PanelState:
    """Everything the panel shows, as numbers: the session's totals, those of the latest
    cell that made calls (live while it runs), and the last call.

    ``budget_usd`` is the hook for budgets: when set (``LiveUpdates.tally.budget_usd``),
    the panel marks a session whose cost exceeds it. Nothing sets it yet.
    """

    session: Summary = field(default_factory=Summary)
    #: Tokens of the calls whose counts were estimated locally (provider reported none).
    estimated_tokens: int = 0
    #: ``In [n]`` of the latest cell that made calls, and that cell's totals; its tag is
    #: the tag of the cell's latest call.
    cell: int | None = None
    cell_totals: Summary | None = None
    last: LastCall | None = None
    budget_usd: float | None = None
    #: The panel no longer moves (the extension was unloaded): its numbers are as of then.
    stopped: bool = False

    @property
    def estimated_share(self) -> float:
        """The share of the session's tokens that were estimated rather than reported."""
        total = self.session.usage.total_tokens
        return self.estimated_tokens / total if total else 0.0

    @property
    def over_budget(self) -> bool:
        return self.budget_usd is not None and self.session.cost_usd > self.budget_usd


class Tally:
    """Running totals over the monitor's records. Each snapshot is read from where the
    last one ended, so a redraw costs O(new records); a reset monitor (or any snapshot
    that no longer starts with what was read) is read again from the start."""

    def __init__(self, budget_usd: float | None = None) -> None:
        self.budget_usd = budget_usd
        self._generation = 0
        self._restart()

    def _restart(self) -> None:
        self._read = 0
        self._last_read: CallRecord | None = None
        self._session = Summary()
        self._estimated_tokens = 0
        #: Totals per cell (keyed by cell number and id), so a worker thread that
        #: finishes a call of an older cell adds to that cell, not to the newest one.
        self._cells: dict[tuple[int | None, str | None], Summary] = {}
        self._newest_cell: tuple[int | None, str | None] | None = None
        self._last: CallRecord | None = None

    def update(self, records: list[CallRecord], generation: int = 0) -> PanelState:
        """Fold in the records not seen yet and return the state they add up to; records
        of another ``generation`` of the monitor (records changed since) are read again."""
        if (generation != self._generation or len(records) < self._read
                or (self._read and records[self._read - 1] is not self._last_read)):
            self._generation = generation
            self._restart()
        for record in records[self._read:]:
            self._add(record)
        self._read = len(records)
        self._last_read = records[-1] if records else None
        return self.state()

    def _add(self, r: CallRecord) -> None:
        self._session.add(r)
        if r.estimated:
            self._estimated_tokens += r.usage.total_tokens
        if r.cell is not None or r.cell_id is not None:
            key = (r.cell, r.cell_id)
            totals = self._cells.get(key)
            if totals is None:
                totals = self._cells[key] = Summary()
                self._newest_cell = key
            totals.add(r)
            totals.tag = r.tag
        self._last = r

    def state(self) -> PanelState:
        """A copy of the totals, safe to hand to another thread."""
        cell = self._cells[self._newest_cell] if self._newest_cell is not None else None
        return PanelState(session=_copy(self._session), estimated_tokens=self._estimated_tokens,
                          cell=self._newest_cell[0] if self._newest_cell else None,
                          cell_totals=_copy(cell) if cell is not None else None,
                          last=LastCall.of(self._last) if self._last is not None else None,
                          budget_usd=self.budget_usd)


def _copy(s: Summary) -> Summary:
    return replace(s, usage=replace(s.usage))


class Throttle:
    """Allows one event per ``interval`` seconds of ``clock``; the clock is injectable so
    tests can drive time by hand."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last = -math.inf

    def remaining(self) -> float:
        """Seconds until the next event is allowed (0 when it is allowed now)."""
        return max(0.0, self._last + self.interval - self.clock())

    def mark(self) -> None:
        self._last = self.clock()


class LiveUpdates:
    """Redraws the panel while calls arrive, at most once per interval, plus a final
    redraw when asked (at the end of a cell).

    ``notify`` is the monitor listener, on the user's call path and on any thread: it
    only notes that something changed and wakes the redraw thread. The redraw thread
    reads the monitor's snapshot (pricing happens there, not in the user's call) and
    draws, so a cell blocked in a long stream or in plain computation still sees the
    calls that already ended; redrawing on the caller's next call would not.
    """

    def __init__(self, monitor: Monitor, draw: Callable[[PanelState], None],
                 interval: float = 1 / UPDATES_PER_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.monitor = monitor
        self.draw = draw
        self.tally = Tally()
        self.throttle = Throttle(interval, clock)
        #: How many times the panel was drawn: what the throttle bounds.
        self.draws = 0
        self._changed = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def notify(self, record: CallRecord) -> None:
        """The monitor listener: O(1), no pricing, no drawing."""
        self._changed = True
        if not self._wake.is_set():
            self._wake.set()

    def pump(self) -> bool:
        """Draw if something changed and the interval has passed; return whether it drew."""
        if not self._changed or self.throttle.remaining() > 0:
            return False
        self.flush()
        return True

    def flush(self) -> PanelState:
        """Read the monitor and draw now, whatever the throttle says."""
        with self._lock:
            # Cleared before reading: a call that lands during the read is drawn next time.
            self._changed = False
            self.throttle.mark()
            state = self._fold()
            self.draws += 1
            self.draw(state)
            return state

    def read(self) -> PanelState:
        """The current state, without drawing."""
        with self._lock:
            return self._fold()

    def _fold(self) -> PanelState:
        """The monitor's records folded into the tally, read again if they changed while
        being read (a record revised, prices set)."""
        for _ in range(3):
            generation = self.monitor.generation
            records = self.monitor.records()
            if self.monitor.generation == generation:
                break
        return self.tally.update(records, generation)

    # -- the redraw thread -------------------------------------------------------------
    def start(self) -> None:
        """Listen to the monitor and redraw from a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tokmagic-panel", daemon=True)
        self._thread.start()
        self.monitor.subscribe(self.notify)

    def stop(self) -> None:
        """Stop listening and end the thread; safe to call twice."""
        self.monitor.unsubscribe(self.notify)
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            # Calls keep coming: wait out the interval, then draw them all at once.
            if self._stop.wait(self.throttle.remaining()):
                return
            self._wake.clear()
            try:
                self.pump()
            except Exception as exc:  # the panel must not die on one bad redraw
                warn_once("panel-draw", f"tokmagic: the live panel could not redraw ({exc!r}); "
                                        "the calls are still recorded, see %llm_usage.")
