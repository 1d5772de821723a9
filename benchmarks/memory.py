#!/usr/bin/env python3
"""How much memory tokmagic keeps per call, measured with tracemalloc against the bare
SDK call in the same run (in-process transports, no sockets).

    python benchmarks/memory.py [--calls N] [--quick]

Capture keeps each response's raw bytes until its record is first read (then only the
record remains), so three figures matter per case: what a call leaves held while its
record is unread, what it leaves once read, and the peak of one long stream (bounded by
the read-along size, whatever the stream's length). See benchmarks/README.md."""
from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead as o  # noqa: E402  (the same recorded exchanges and mocked transports)

from tokmagic.capture import exchange  # noqa: E402
from tokmagic.monitor import session  # noqa: E402

def fresh(data: bytes) -> bytes:
    """A new copy, as each network read is: capture keeps the pieces it is handed, and
    a piece the transport still holds anyway would cost it nothing."""
    return bytes(bytearray(data))


def _handler(case_id: str, extra: int = 0):
    import httpx2

    case = o.load_case(case_id)
    headers = o.response_headers(case)
    if case["response"].get("sse") is None:
        body = o.response_body(case)
        return lambda request: httpx2.Response(200, headers=headers, content=fresh(body))
    events = o.sse_events(case)
    if extra:
        is_delta = o._anthropic_delta if case_id.startswith("anthropic") else o._openai_delta
        events = o.lengthen(events, is_delta, extra)

    class Fresh(httpx2.SyncByteStream):
        def __iter__(self):
            for event in events:
                yield fresh(event)

    headers = {**headers, "content-type": "text/event-stream"}
    handler = lambda request: httpx2.Response(200, headers=headers, stream=Fresh())  # noqa: E731
    handler.size = sum(map(len, events))
    return handler


def bench(case_id: str, extra: int = 0):
    """One SDK call on the case, as a Bench, and the size of its response body."""
    case = o.load_case(case_id)
    handler = _handler(case_id, extra)
    kwargs = case["request"]["body"]
    client = (o._anthropic if case_id.startswith("anthropic") else o._openai)(handler)
    create = client.messages.create if case_id.startswith("anthropic") else client.chat.completions.create

    def call():
        result = create(**kwargs)
        if kwargs.get("stream"):
            for _ in result:
                pass
    return o.SyncBench(call), getattr(handler, "size", None)


CASES = [
    ("openai chat", "openai-chat-basic"),
    ("openai chat stream", "openai-chat-stream-include-usage"),
    ("openai stream, no usage", "openai-chat-stream-no-usage"),
    ("anthropic messages", "anthropic-messages-basic"),
    ("anthropic messages stream", "anthropic-messages-stream"),
]


def held_after(bench, calls: int) -> int:
    """Bytes still allocated after ``calls`` calls, over those before them."""
    bench.prepare(calls)
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    bench.run(calls)
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before


def per_call(label: str, case_id: str, calls: int) -> tuple[str, float, float, float]:
    bench = globals()["bench"](case_id)[0]
    o.set_variant(True)  # warm up both ways, prices and tokenizer loaded included
    bench.prepare(5)
    bench.run(5)
    session.records()
    session.reset()
    o.set_variant(False)
    bench.prepare(5)
    bench.run(5)
    bare = held_after(bench, calls) / calls
    o.set_variant(True)
    unread = held_after(bench, calls) / calls
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    session.records()
    gc.collect()
    read = unread + (tracemalloc.get_traced_memory()[0] - before) / calls
    session.reset()
    return label, bare, unread - bare, read - bare


def long_stream_peak(extra: int) -> tuple[int, int, int]:
    """Peak bytes during one openai stream of ``extra`` more deltas, bare and captured,
    and the stream's size."""
    peaks = []
    for captured in (False, True):
        o.set_variant(captured)
        one, size = bench("openai-chat-stream-include-usage", extra)
        gc.collect()
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        one.run(1)
        peaks.append(tracemalloc.get_traced_memory()[1] - start)
        session.records()
        session.reset()
    return peaks[0], peaks[1], size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per case (default 500)")
    parser.add_argument("--quick", action="store_true",
                        help="a shorter long stream (just past the read-along size)")
    args = parser.parse_args()
    o.set_variant(True)
    for _, case_id in CASES:  # load the SDKs, prices and tokenizer before tracing starts
        bench(case_id)[0].run(2)
    session.records()
    session.reset()
    tracemalloc.start()
    print(f"tokmagic memory: bytes per call over the bare call, {args.calls} calls per case\n")
    print(f"{'case':28} {'response':>9} {'bare kept':>10} {'+ unread':>10} {'+ read':>10}")
    for label, case_id in CASES:
        name, bare, unread, read = per_call(label, case_id, args.calls)
        case = o.load_case(case_id)
        size = len(o.response_body(case)) if case["response"].get("sse") is None else sum(
            map(len, o.sse_events(case)))
        print(f"{name:28} {size:9} {bare:10.0f} {unread:10.0f} {read:10.0f}")
    print(f"\nlong stream: one openai stream, peak bytes during the call "
          f"(read along past {exchange._READ_ALONG // 1024} KiB)")
    print(f"{'deltas':>8} {'stream bytes':>13} {'bare peak':>11} {'captured peak':>14} {'ratio':>7}")
    for extra in (300, 3_000) if args.quick else (1_000, 20_000):
        bare, captured, size = long_stream_peak(extra)
        print(f"{extra:8} {size:13} {bare:11} {captured:14} {captured / bare:7.2f}")


if __name__ == "__main__":
    main()
