"""The live panel's state machine and throttle, without IPython or widgets: the numbers
it shows, how often it redraws under a flood of calls (a fake clock drives time), and
that its final state equals the monitor's own totals, whether calls come from a loop,
worker threads or asyncio tasks."""
from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest

from tokmagic.ipython import panel_text
from tokmagic.ipython.panel_state import LiveUpdates, PanelState, Tally, Throttle
from tokmagic.monitor import Summary, session
from tokmagic.records import CallRecord, Usage

INTERVAL = 0.25


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def call(i: int = 0, *, cell: int | None = None, model: str = "gpt-4o-mini", estimated: bool = False,
         tag: str | None = None) -> CallRecord:
    """A call as capture records it, with varied counts so totals are not trivially equal."""
    return CallRecord(time=1.7e9 + i, provider="openai", api="chat", model=model, stream=bool(i % 2),
                      status="ok", http_status=200, estimated=estimated, cell=cell, tag=tag,
                      usage=Usage(input_tokens=10 + i % 7, cached_input_tokens=i % 3, output_tokens=5 + i % 5,
                                  reasoning_tokens=i % 2),
                      latency_s=0.5 + (i % 4) / 10, ttft_s=0.1)


# -- the throttle ----------------------------------------------------------------------

def test_throttle_allows_one_event_per_interval():
    clock = FakeClock()
    throttle = Throttle(INTERVAL, clock)
    assert throttle.remaining() == 0
    throttle.mark()
    assert throttle.remaining() == INTERVAL
    clock.now += 0.1
    assert throttle.remaining() == pytest.approx(0.15)
    clock.now += 0.15
    assert throttle.remaining() == 0


def test_ten_thousand_calls_draw_a_bounded_number_of_times_and_end_exact():
    """1 ms apart, 10,000 calls span 10 s of the fake clock: at most one redraw per
    0.25 s, then the final redraw gives exactly the monitor's totals."""
    clock = FakeClock()
    drawn: list[PanelState] = []
    updates = LiveUpdates(session, drawn.append, clock=clock)
    session.subscribe(updates.notify)
    try:
        for i in range(10_000):
            models = ("gpt-4o-mini", "gpt-4o", "no-such-model")
            session.add(call(i, cell=1 + i // 2500, model=models[i % 3], estimated=i % 11 == 0))
            clock.now += 0.001
            updates.pump()  # what the redraw thread does whenever it wakes
    finally:
        session.unsubscribe(updates.notify)
    assert 30 <= updates.draws <= 10 / INTERVAL + 1
    final = updates.flush()
    assert final.session == session.summary()
    assert final.session.calls == 10_000 and final.session.unpriced > 0 and final.session.estimated > 0
    assert final.cell == 4
    assert final.cell_totals == session.summary(lambda r: r.cell == 4)
    assert final.estimated_tokens == sum(r.usage.total_tokens for r in session.records() if r.estimated)
    # Each redraw showed more calls than the one before.
    counts = [s.session.calls for s in drawn]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)


def test_slow_calls_are_each_drawn_and_nothing_is_drawn_without_a_change():
    clock = FakeClock()
    updates = LiveUpdates(session, lambda state: None, clock=clock)
    session.subscribe(updates.notify)
    try:
        for i in range(5):
            session.add(call(i))
            assert updates.pump()
            clock.now += 1
            assert not updates.pump()  # nothing new
    finally:
        session.unsubscribe(updates.notify)
    assert updates.draws == 5


def test_notify_neither_reads_nor_draws(monkeypatch):
    """The listener runs on the user's call path: it may only note the change."""
    work = []
    updates = LiveUpdates(session, lambda state: work.append("draw"))
    monkeypatch.setattr(session, "records", lambda: work.append("read") or [])
    session.subscribe(updates.notify)
    try:
        for i in range(1000):
            session.add(call(i))
    finally:
        session.unsubscribe(updates.notify)
    assert work == [] and updates.draws == 0 and updates._changed


# -- threads and asyncio ---------------------------------------------------------------

def test_calls_from_threads_and_tasks_are_drawn_live_and_end_exact():
    interval = 0.05
    drawn: list[PanelState] = []
    updates = LiveUpdates(session, drawn.append, interval=interval)
    updates.start()
    started = time.monotonic()
    try:
        def worker(n: int) -> None:
            for i in range(2500):
                session.add(call(i, cell=n))
                if i % 250 == 0:
                    time.sleep(0.01)

        async def tasks() -> None:
            async def one(i: int) -> None:
                await asyncio.sleep(0.001 * (i % 20))
                session.add(call(i, cell=9, tag="async"))
            await asyncio.gather(*(one(i) for i in range(2000)))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(1, 5)]
        for t in threads:
            t.start()
        asyncio.run(tasks())
        for t in threads:
            t.join()
        deadline = time.monotonic() + 10  # the redraw thread catches up on its own
        while not (drawn and drawn[-1].session.calls == 12_000) and time.monotonic() < deadline:
            time.sleep(interval)
    finally:
        updates.stop()
    elapsed = time.monotonic() - started
    assert 1 < updates.draws <= elapsed / interval + 2
    assert drawn[-1].session == session.summary() and drawn[-1].session.calls == 12_000
    assert updates.flush().session == session.summary()


def test_no_reader_sees_a_record_another_reader_is_still_pricing(monkeypatch):
    """The redraw thread prices records when it reads them; a user reading at that very
    moment must get them priced too, not half done."""
    from tokmagic import resolve as resolving

    pricing, release = threading.Event(), threading.Event()
    price = resolving.resolve

    def slow(record: CallRecord) -> None:
        pricing.set()
        release.wait(5)
        price(record)

    monkeypatch.setattr(resolving, "resolve", slow)
    for i in range(3):
        session.add(call(i))
    panel_read = threading.Thread(target=session.records)
    panel_read.start()
    pricing.wait(5)
    threading.Timer(0.2, release.set).start()
    assert all(r.priced and not math.isnan(r.cost_usd) for r in session.records())
    panel_read.join()


def test_stop_ends_the_thread_and_the_listener():
    updates = LiveUpdates(session, lambda state: None)
    updates.start()
    thread = updates._thread
    updates.stop()
    updates.stop()
    assert not thread.is_alive()
    session.add(call())
    assert not updates._changed


# -- what the state holds --------------------------------------------------------------

def test_a_reset_monitor_is_read_again_from_the_start():
    tally = Tally()
    for i in range(3):
        session.add(call(i, cell=1))
    assert tally.update(session.records()).session.calls == 3
    session.reset()
    session.add(call(7, cell=2))
    state = tally.update(session.records())
    assert state.session == session.summary() and state.session.calls == 1 and state.cell == 2


def test_the_newest_cell_keeps_the_panel_when_an_older_cell_finishes_a_call():
    tally = Tally()
    session.add(call(1, cell=3, tag="a"))
    session.add(call(2, cell=4, tag="b"))
    session.add(call(3, cell=3, tag="a"))  # a worker thread started in cell 3
    session.add(call(4, cell=4, tag="c"))
    state = tally.update(session.records())
    assert state.cell == 4
    assert state.cell_totals.calls == 2 and state.cell_totals.tag == "c"
    assert state.last.input_tokens == call(4).usage.input_tokens


def test_calls_outside_a_cell_count_for_the_session_only():
    tally = Tally()
    session.add(call(1))
    state = tally.update(session.records())
    assert state.session.calls == 1 and state.cell is None and state.cell_totals is None


# -- what the panel says -----------------------------------------------------------------

def test_text_and_html_show_the_same_numbers():
    session.add(call(1, cell=5, tag="exp"))
    session.add(call(2, cell=5, tag="exp"))
    state = Tally().update(session.records())
    text, page = panel_text.text(state), panel_text.page(state)
    s = state.session
    assert text.splitlines()[0] == "tokmagic · LLM usage"
    assert "cell [5] · exp" in text and "cell [5] · exp" in page
    assert f"<td class='tm-calls'>{s.calls}</td>" in page
    assert f"<td class='tm-input'>{s.usage.input_tokens:,}</td>" in page
    assert "last call: gpt-4o-mini · 12 in / 7 out tokens · 0.70 s" in text
    assert "⚠" not in page and "!" not in text


def test_unpriced_estimated_and_over_budget_are_marked():
    session.add(call(1, model="no-such-model"))
    session.add(call(2, estimated=True))
    state = Tally().update(session.records())
    assert state.session.unpriced == 1 and math.isnan(session.records()[0].cost_usd)
    marks = panel_text.marks(state)
    share = state.estimated_share
    assert share == pytest.approx(call(2).usage.total_tokens / state.session.usage.total_tokens)
    assert marks == ["1 call unpriced (not in the cost; '+ ?' marks it)",
                     f"1 call estimated ({share:.0%} of tokens; '~' marks their totals)"]
    assert "~$" in panel_text.text(state) and "+ ?" in panel_text.text(state)
    # Budgets are a later feature: the mark shows only when a budget is set and exceeded.
    assert not state.over_budget
    state.budget_usd = state.session.cost_usd / 2
    assert state.over_budget and panel_text.marks(state)[-1].startswith("over budget (")
    assert "⚠ over budget" in panel_text.marks_html(state)
    state.budget_usd = state.session.cost_usd * 2
    assert not state.over_budget
    assert Tally(budget_usd=0.0).update(session.records()).over_budget


def test_an_empty_session_reads_plainly():
    state = Tally().update([])
    assert state.session == Summary() and state.last is None
    assert panel_text.text(state).splitlines()[-1] == "last call: none yet"
