#!/usr/bin/env python3
"""What the live panel costs: time added to each recorded call, and the widget traffic a
flood of calls causes.

    python benchmarks/panel.py [--quick]

1. Cost per recorded call: CPU time of the whole process (every thread, so the redraw
   thread's work counts; other processes on a busy machine do not), best of several
   alternating repeats:
   * ``session.add`` alone, with the panel's listener only (no redraws), and with a live
     widget panel whose redraw thread reads and draws while the calls land;
   * a whole openai chat call through capture (httpx2 MockTransport, no sockets), without
     and with a live widget panel.
   Each timed block ends with one ``session.records()``: pricing is deferred until a
   record is first read, and the panel's thread reads (so prices) while calls land, so
   the bare rows must pay for pricing too or the panel would be charged for it. The
   model is priced by hand (``tokmagic.set_price``, a dictionary lookup) so that the
   rows show the panel rather than genai-prices' lookup, which has a row of its own:
   whoever reads a record first pays it once. Each row shows µs per call and the ratio
   to the same recording without a panel.
2. A flood: worker threads record calls for a few seconds while a live widget panel
   redraws, once at a heavy but plausible 2,000 calls/s and once as fast as they can.
   Each widget's comm ``send`` is wrapped to count the messages and their JSON bytes.
   Outside a kernel the comm is ipywidgets' DummyComm, so the count is what a kernel
   would send; the ZeroMQ send itself is not timed.

Read the numbers as magnitudes: they move between runs. The script exits 0 whatever
they are.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure the checkout this file lives in

import tokmagic  # noqa: E402
from tokmagic.ipython.panel import LivePanel  # noqa: E402
from tokmagic.ipython.panel_state import UPDATES_PER_S, LiveUpdates  # noqa: E402
from tokmagic.monitor import session  # noqa: E402
from tokmagic.records import CallRecord, Usage  # noqa: E402

#: CPU seconds of this process, all threads included.
_cpu = time.process_time
#: The widget sections a redraw may change (totals, last call, marks).
SECTIONS = 3
#: The model of every measured call, priced by hand (a dictionary lookup).
MODEL = "gpt-4o-mini"
#: A model left to genai-prices, for the pricing row.
LOOKED_UP = "gpt-4o"
CHAT_BODY = {"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": MODEL,
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}


def records(n: int, model: str = MODEL) -> list[CallRecord]:
    """Fresh, unpriced records, as capture hands them to the monitor."""
    base = CallRecord(time=time.time(), provider="openai", api="chat", model=model, stream=False,
                      status="ok", http_status=200, latency_s=0.4, cell=1)
    return [replace(base, usage=Usage(input_tokens=100 + i % 50, output_tokens=20 + i % 7)) for i in range(n)]


def shell():
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.instance()


def live_widget_panel() -> LivePanel:
    """A widget panel as in a kernel, redraw thread running; shown once, as %load_ext does."""
    panel = LivePanel(shell(), widgets=True)
    panel.updates.flush()
    return panel


def best_per_call(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Best seconds per call of each variant, the variants alternating within each repeat."""
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(repeats):
        for name, run in variants.items():
            best[name] = min(best[name], run())
    return best


# -- 1. cost per call ------------------------------------------------------------------

def add_calls(n: int, with_panel: str | None) -> Callable[[], float]:
    def run() -> float:
        session.reset()
        batch = records(n)
        listener = panel = None
        if with_panel == "listener":
            listener = LiveUpdates(session, lambda state: None)
            session.subscribe(listener.notify)
        elif with_panel == "widget":
            panel = live_widget_panel()
        started = _cpu()
        for record in batch:
            session.add(record)
        session.records()
        elapsed = _cpu() - started
        if listener is not None:
            session.unsubscribe(listener.notify)
        if panel is not None:
            panel.close()
        return elapsed / n
    return run


def sdk_calls(n: int, with_panel: bool) -> Callable[[], float]:
    import httpx2
    import openai

    client = openai.OpenAI(http_client=httpx2.Client(transport=httpx2.MockTransport(
        lambda request: httpx2.Response(200, json=CHAT_BODY))), base_url="https://api.openai.com/v1",
        api_key="sk-bench", max_retries=0)
    messages = [{"role": "user", "content": "hi"}]

    def run() -> float:
        session.reset()
        panel = live_widget_panel() if with_panel else None
        started = _cpu()
        for _ in range(n):
            client.chat.completions.create(model=MODEL, messages=messages)
        session.records()
        elapsed = _cpu() - started
        if panel is not None:
            panel.close()
        return elapsed / n
    return run


def notify_alone(n: int) -> Callable[[], float]:
    """The listener by itself: what the panel adds on the thread that made the call."""
    updates = LiveUpdates(session, lambda state: None)
    record = records(1)[0]

    def run() -> float:
        notify = updates.notify
        started = _cpu()
        for _ in range(n):
            notify(record)
        return (_cpu() - started) / n
    return run


def pricing(n: int) -> Callable[[], float]:
    def run() -> float:
        session.reset()
        for record in records(n, LOOKED_UP):
            session.add(record)
        started = _cpu()
        session.records()
        return (_cpu() - started) / n
    return run


def cost_table(n_add: int, n_sdk: int, repeats: int) -> list[tuple[str, float, float | None]]:
    adds = best_per_call({"none": add_calls(n_add, None), "listener": add_calls(n_add, "listener"),
                          "widget": add_calls(n_add, "widget")}, repeats)
    sdk = best_per_call({"none": sdk_calls(n_sdk, False), "widget": sdk_calls(n_sdk, True)}, repeats)
    alone = best_per_call({"info": notify_alone(n_add), "pricing": pricing(n_add)}, repeats)
    return [
        ("the panel listener alone (info)", alone["info"], None),
        ("pricing one record via genai-prices (info)", alone["pricing"], None),
        ("session.add, no panel", adds["none"], adds["none"]),
        ("session.add + panel listener only", adds["listener"], adds["none"]),
        ("session.add + live widget panel", adds["widget"], adds["none"]),
        ("openai chat captured, no panel", sdk["none"], sdk["none"]),
        ("openai chat captured + live widget panel", sdk["widget"], sdk["none"]),
    ]


# -- 2. a flood of calls ---------------------------------------------------------------

def count_sends(panel: LivePanel) -> dict[str, int]:
    """Wrap the comm of the panel's widgets: count messages and their JSON bytes."""
    counts = {"messages": 0, "bytes": 0}
    lock = threading.Lock()
    box = panel.widget.box
    for widget in (box, *box.children):
        send = widget.comm.send

        def counted(data=None, metadata=None, buffers=None, _send=send):
            with lock:
                counts["messages"] += 1
                counts["bytes"] += len(json.dumps(data))
            return _send(data=data, metadata=metadata, buffers=buffers)

        widget.comm.send = counted
    return counts


def flood(seconds: float, threads: int, rate: float | None) -> dict[str, float]:
    """Record calls from ``threads`` threads, ``rate`` calls/s in all (None: flat out)."""
    session.reset()
    panel = live_widget_panel()
    counts = count_sends(panel)
    draws_before = panel.updates.draws
    stop = threading.Event()
    recorded = [0] * threads
    batch_size = 20

    def worker(k: int) -> None:
        pause = batch_size * threads / rate if rate else 0
        while not stop.is_set():
            for record in records(batch_size):
                session.add(record)
            recorded[k] += batch_size
            if pause:
                time.sleep(pause)

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    panel.close()
    draws = panel.updates.draws - draws_before
    return {"calls_per_s": sum(recorded) / elapsed, "draws_per_s": draws / elapsed,
            "messages_per_s": counts["messages"] / elapsed, "kb_per_s": counts["bytes"] / 1024 / elapsed,
            "messages_per_draw": counts["messages"] / max(draws, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls and shorter floods (about 15 s)")
    args = ap.parse_args()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ROOT.parent / "shared" / "tiktoken_cache"))
    warnings.simplefilter("ignore")
    tokmagic.install()
    tokmagic.set_price(MODEL, input=0.15, output=0.6)
    n_add, n_sdk, repeats, seconds = (5_000, 200, 2, 1.5) if args.quick else (50_000, 2_000, 5, 5.0)

    print(f"tokmagic live panel, {UPDATES_PER_S} redraws/s at most; process CPU time, best of {repeats}")
    print(f"\n{'cost per recorded call':<44}{'µs/call':>10}{'added µs':>10}{'vs no panel':>13}")
    for label, per_call, bare in cost_table(n_add, n_sdk, repeats):
        added = "-" if bare is None else f"{(per_call - bare) * 1e6:.2f}"
        ratio = "-" if bare is None else f"{per_call / bare:.2f}x"
        print(f"{label:<44}{per_call * 1e6:>10.2f}{added:>10}{ratio:>13}")

    threads, target = 4, SECTIONS * (UPDATES_PER_S + 1)
    print(f"\nflood: {threads} threads for {seconds:.1f} s each, live widget panel; "
          f"target: at most {target} comm msgs/s ({SECTIONS} sections x {UPDATES_PER_S + 1} redraws)")
    print(f"{'flood':<14}{'calls/s':>10}{'redraws/s':>11}{'comm msgs/s':>13}{'msgs/redraw':>13}"
          f"{'KB/s':>8}{'verdict':>9}")
    for label, rate in (("2,000 calls/s", 2000.0), ("flat out", None)):
        r = flood(seconds, threads, rate)
        verdict = "PASS" if r["messages_per_s"] <= target else "FAIL"
        print(f"{label:<14}{r['calls_per_s']:>10,.0f}{r['draws_per_s']:>11.1f}{r['messages_per_s']:>13.1f}"
              f"{r['messages_per_draw']:>13.1f}{r['kb_per_s']:>8.1f}{verdict:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
