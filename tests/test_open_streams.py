"""A stream its cell leaves open (a loop left with break, islice, an exception) is one
interrupted call of that cell as soon as the cell ends, counted in the cell's summary;
read on in a later cell, the same record takes its final, exact outcome. Driven in a
real InteractiveShell with the real openai SDK against the replay server."""
from __future__ import annotations

import pytest
from IPython.utils.capture import capture_output

from tokmagic.ipython.panel_state import LiveUpdates
from tokmagic.monitor import session

from .conftest import load_case
from .test_ipython import run

CASE = "openai-chat-stream-include-usage"
EXPECTED = load_case(CASE)["expected"]
OPEN = f"st = chat('{CASE}', stream=True, stream_options={{'include_usage': True}})\n"

#: Ways to stop reading a stream and leave it open, as cell code.
LEFT_OPEN = {
    "break": OPEN + "for chunk in st:\n    break\n",
    "islice": "import itertools\n" + OPEN + "first = list(itertools.islice(st, 3))\n",
    "exception": OPEN + "try:\n    for chunk in st:\n        raise ValueError('enough')\n"
                 "except ValueError:\n    pass\n",
    "unread": OPEN,
}


def _panel_totals():
    return LiveUpdates(session, draw=lambda state: None).read()


@pytest.mark.parametrize("how", sorted(LEFT_OPEN))
@pytest.mark.parametrize("magic", ["%%llm_track cut -q -o s\n", ""])
def test_stream_left_open_is_counted_in_its_cell_then_completed(ip, how, magic):
    cell = run(ip, magic + LEFT_OPEN[how])

    (record,) = session.records()
    assert (record.status, record.error) == ("interrupted", "StreamLeftOpen")
    assert (record.cell, record.background) == (cell.execution_count, False)
    assert record.stream and record.estimated  # OpenAI sends usage in the last chunk only
    assert record.usage.input_tokens > 0
    assert (record.usage.output_tokens > 0) == (how != "unread")
    if magic:
        s = ip.user_ns["s"]
        assert (record.tag, s.calls, s.interrupted, s.estimated) == ("cut", 1, 1, 1)
        assert s.usage.input_tokens == record.usage.input_tokens
    assert _panel_totals().session.interrupted == 1

    run(ip, "rest = list(st)")  # a later cell reads it to its end: the record is completed

    (final,) = session.records()
    assert final is record
    assert (final.status, final.error, final.estimated) == ("ok", None, False)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        EXPECTED["input_tokens"], EXPECTED["output_tokens"])
    assert final.cell == cell.execution_count and final.cost_usd == final.cost_usd
    panel = _panel_totals().session
    assert (panel.calls, panel.interrupted, panel.usage.output_tokens) == (1, 0, EXPECTED["output_tokens"])


def test_a_stream_left_open_then_dropped_stays_one_interrupted_call(ip):
    cell = run(ip, LEFT_OPEN["break"])
    run(ip, "del st, chunk\nimport gc; gc.collect()")
    (record,) = session.records()
    assert (record.status, record.cell) == ("interrupted", cell.execution_count)


def test_an_async_stream_left_with_break_is_counted_in_its_cell(ip):
    code = (
        "import asyncio\nfrom openai import AsyncOpenAI\n"
        "aclient = AsyncOpenAI(base_url=BASE + '/v1', api_key='test', max_retries=0)\n"
        "async def first_chunk():\n"
        "    st = await aclient.chat.completions.create(model='gpt-4o-mini',\n"
        "        messages=[{'role': 'user', 'content': 'hi'}], stream=True,\n"
        f"        stream_options={{'include_usage': True}}, extra_headers={{'X-Replay-Case': '{CASE}'}})\n"
        "    async for chunk in st:\n        break\n    return st\n"
        "st = asyncio.run(first_chunk())\n")
    cell = run(ip, "%%llm_track async-cut -q -o s\n" + code)
    (record,) = session.records()
    assert (record.status, record.cell, record.tag) == ("interrupted", cell.execution_count, "async-cut")
    assert ip.user_ns["s"].calls == 1 and record.usage.input_tokens > 0


def test_a_stream_another_thread_reads_is_left_to_finish(ip):
    """Only the cell's own thread's streams are settled: a worker still reading goes on,
    and its call stays the cell's."""
    with capture_output() as io:
        cell = run(ip, (
            "%%llm_track worker -o s\nimport threading\nopened, go = threading.Event(), threading.Event()\n"
            "def read():\n" + "".join("    " + line + "\n" for line in OPEN.splitlines())
            + "    next(iter(st))\n    opened.set()\n    go.wait(5)\n    list(st)\n"
            "t = threading.Thread(target=read)\nt.start()\nassert opened.wait(5)\n"))
    assert session.records() == []
    assert (ip.user_ns["s"].calls, ip.user_ns["s"].running) == (0, 1)
    assert "1 still running, not counted here" in io.outputs[0].data["text/plain"]
    run(ip, "go.set()\nt.join(5)")
    (record,) = session.records()
    assert (record.status, record.cell, record.tag, record.background) == (
        "ok", cell.execution_count, "worker", False)
    assert record.usage.output_tokens == EXPECTED["output_tokens"]


def test_a_revision_from_the_garbage_collector_inside_a_read_does_not_deadlock(monkeypatch):
    """A stream left open by its block, read on, then dropped in a reference cycle: the
    collector may revise its record while this very thread resolves records."""
    import gc
    import threading

    import tokmagic
    from tokmagic import resolve as resolving

    from .test_attribution import STREAM, _stream_client

    client = _stream_client()
    with tokmagic.track("left-open"):
        stream = client.chat.completions.create(**STREAM["request"]["body"])
        chunks = iter(stream)
        next(chunks)
    next(chunks)  # read on after the block: the record must be revised when it ends
    real = resolving.resolve
    collected = []

    def resolve_then_collect(record):
        real(record)
        if not collected:
            collected.append(gc.collect())
    gc.disable()
    try:
        tokmagic.set_price("another-model", 1, 1)  # the next read reprices, so it resolves
        del stream, chunks
        monkeypatch.setattr(resolving, "resolve", resolve_then_collect)
        reader = threading.Thread(target=session.records, daemon=True)
        reader.start()
        reader.join(10)
        assert not reader.is_alive(), "records() deadlocked on the revision"
    finally:
        gc.enable()
        tokmagic.clear_prices()
    (record,) = session.records()
    assert collected and (record.status, record.error) == ("interrupted", "ClosedEarly")


def test_a_requests_stream_left_open_is_counted_then_completed(ip):
    """The same through requests (urllib3), read line by line."""
    cell = run(ip, (
        "import requests\n"
        "r = requests.post(BASE + '/v1/chat/completions', stream=True, headers={'X-Replay-Case': "
        f"'{CASE}', 'Authorization': 'Bearer test'}}, json={{'model': 'gpt-4o-mini', 'stream': True, "
        "'stream_options': {'include_usage': True}, 'messages': [{'role': 'user', 'content': 'hi'}]})\n"
        "lines = r.iter_lines()\nfirst = next(lines)\n"))
    (record,) = session.records()
    assert (record.status, record.cell, record.error) == ("interrupted", cell.execution_count, "StreamLeftOpen")
    run(ip, "rest = list(lines)")
    (record,) = session.records()
    assert (record.status, record.estimated) == ("ok", False)
    assert (record.usage.input_tokens, record.usage.output_tokens) == (
        EXPECTED["input_tokens"], EXPECTED["output_tokens"])


def test_a_stream_left_after_its_usage_chunk_is_complete(ip):
    """The final usage chunk came; only [DONE] was left unread: nothing is missing."""
    cell = run(ip, OPEN + "for chunk in st:\n    if chunk.usage:\n        break\n")
    (record,) = session.records()
    assert (record.status, record.error, record.estimated, record.cell) == ("ok", None, False, cell.execution_count)
    assert (record.usage.input_tokens, record.usage.output_tokens) == (
        EXPECTED["input_tokens"], EXPECTED["output_tokens"])
