"""Calls land in the cell and tag that made them, whatever thread or task made them;
calls left running after their block are background calls; retries are attempts of one
call; a stream dropped unread is still one (interrupted) call."""
from __future__ import annotations

import asyncio
import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx2
import openai
import pytest

import tokmagic
from tokmagic.monitor import session

from .conftest import load_case

BASIC = load_case("openai-chat-basic")
STREAM = load_case("openai-chat-stream-include-usage")


def _respond(case: dict):
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(case["response"]["status"], json=case["response"]["body"])
    return handler


def _client(handler=None, **options) -> openai.OpenAI:
    transport = httpx2.MockTransport(handler or _respond(BASIC))
    return openai.OpenAI(api_key="x", base_url="https://api.openai.com/v1",
                         http_client=httpx2.Client(transport=transport), **options)


def _async_client() -> openai.AsyncOpenAI:
    transport = httpx2.MockTransport(_respond(BASIC))
    return openai.AsyncOpenAI(api_key="x", base_url="https://api.openai.com/v1",
                              http_client=httpx2.AsyncClient(transport=transport))


def _call(client) -> None:
    client.chat.completions.create(**BASIC["request"]["body"])


def test_threads_and_executor_jobs_count_for_the_block_that_started_them():
    client = _client()
    threads, per_thread = 16, 200
    with tokmagic.track("fan-out") as summary:
        workers = [threading.Thread(target=lambda: [_call(client) for _ in range(per_thread)])
                   for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: _call(client), range(100)))
    expected = threads * per_thread + 100
    records = session.records()
    assert len(records) == expected == summary.calls
    assert {r.tag for r in records} == {"fan-out"}
    assert summary.usage.input_tokens == expected * BASIC["expected"]["input_tokens"]
    assert summary.usage.output_tokens == expected * BASIC["expected"]["output_tokens"]


def test_an_executor_created_earlier_runs_each_job_in_its_submitters_scope():
    client = _client()
    with ThreadPoolExecutor(2) as pool:
        with tokmagic.track("a"):
            pool.submit(_call, client).result()
        with tokmagic.track("b"):
            pool.submit(_call, client).result()
    assert [r.tag for r in session.records()] == ["a", "b"]


def test_a_thousand_concurrent_async_calls_are_exact():
    async def main():
        client = _async_client()
        with tokmagic.track("async") as summary:
            await asyncio.gather(*(client.chat.completions.create(**BASIC["request"]["body"])
                                   for _ in range(1000)))
        return summary
    summary = asyncio.run(main())
    records = session.records()
    assert len(records) == summary.calls == 1000
    assert {r.tag for r in records} == {"async"}
    assert summary.usage.total_tokens == 1000 * (BASIC["expected"]["input_tokens"]
                                                 + BASIC["expected"]["output_tokens"])


def test_a_thread_left_running_after_its_block_makes_background_calls():
    client = _client()
    go, done = threading.Event(), threading.Event()

    def late():
        go.wait(5)
        _call(client)
        done.set()
    with tokmagic.track("cell-1"):
        _call(client)
        threading.Thread(target=late).start()
    with tokmagic.track("cell-2"):
        go.set()
        assert done.wait(5)
        _call(client)
    first, late_call, second = sorted(session.records(), key=lambda r: r.time)
    assert (first.tag, first.background) == ("cell-1", False)
    assert (second.tag, second.background) == ("cell-2", False)
    assert late_call.background and late_call.tag != "cell-2"
    assert tokmagic.summary("cell-2").calls == 1


def test_retried_attempts_are_rows_of_one_call():
    """The SDK retries a 429 twice; three rows, one call, only the success has tokens."""
    answers = iter([429, 500, 200])

    def handler(request):
        status = next(answers)
        if status != 200:
            return httpx2.Response(status, json={"error": {"message": "slow down"}},
                                   headers={"retry-after-ms": "1"})
        return _respond(BASIC)(request)
    client = _client(handler, max_retries=2)
    with tokmagic.track("retry") as summary:
        _call(client)
    rows = session.records()
    assert [(r.status, r.http_status, r.attempt) for r in rows] == [
        ("error", 429, 1), ("error", 500, 2), ("ok", 200, 3)]
    assert len({r.call_id for r in rows}) == 1
    assert (summary.calls, summary.attempts) == (1, 3)
    assert [r.usage.total_tokens for r in rows[:2]] == [0, 0] and rows[0].cost_usd == 0
    by_tag = tokmagic.usage(by="tag")
    assert by_tag.loc["retry", "calls"] == 1 and by_tag.loc["retry", "attempts"] == 3


class _Events(httpx2.SyncByteStream):
    """The recorded stream, one event per read, as a server sends it."""

    def __iter__(self):
        for event in STREAM["response"]["sse"].split("\n\n"):
            if event:
                yield (event + "\n\n").encode()


def _stream_client() -> openai.OpenAI:
    def handler(request):
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, stream=_Events())
    return _client(handler)


@pytest.mark.parametrize("how", ["break", "close", "never-read"])
def test_a_stream_given_up_early_is_one_interrupted_call(how):
    client = _stream_client()
    stream = client.chat.completions.create(**STREAM["request"]["body"])
    if how == "break":
        for _ in stream:
            break
        stream.close()
    elif how == "close":
        stream.close()
    del stream
    gc.collect()
    (record,) = session.records()
    assert record.status == "interrupted"
    assert record.estimated and record.usage.input_tokens > 0
