"""Responses are read when their records are, not during the call: what the call path
keeps is bounded, and a response read early (a long stream, too much held unread) gives
the very same record as one read late."""
from __future__ import annotations

import gzip
import json

import httpx2
import openai
import pytest

from tokmagic.capture import exchange, outcome
from tokmagic.monitor import session

from .conftest import load_case, replay_server
from .test_robustness import responder

STREAM_CASE = load_case("openai-chat-stream-include-usage")
NO_USAGE_CASE = load_case("openai-chat-stream-no-usage")
WHOLE_CASE = load_case("openai-chat-basic")


def _client(handler) -> openai.OpenAI:
    return openai.OpenAI(base_url="https://api.openai.com/v1", api_key="k", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def _stream(case: dict, gzipped: bool = False) -> None:
    pieces = [e.encode() for e in replay_server.split_events(case)]
    headers = {}
    if gzipped:
        pieces, headers = [gzip.compress(b"".join(pieces))], {"content-encoding": "gzip"}
    with _client(responder(pieces=pieces, content_type="text/event-stream", **headers)) as client:
        for _ in client.chat.completions.create(**case["request"]["body"]):
            pass


def _whole(case: dict) -> None:
    body = json.dumps(case["response"]["body"]).encode()
    with _client(responder(body=body)) as client:
        client.chat.completions.create(**case["request"]["body"])


def _usage_of(record) -> tuple:
    u = record.usage
    return (record.status, record.model, u.input_tokens, u.cached_input_tokens, u.output_tokens,
            u.reasoning_tokens, record.estimated)


def _expected(case: dict) -> tuple:
    e = case["expected"]
    return (e["input_tokens"], e["output_tokens"])


def test_the_call_path_leaves_the_response_unread_until_a_record_is_read():
    before = outcome._held  # what earlier tests' records, still referenced somewhere, hold
    _whole(WHOLE_CASE)
    _stream(STREAM_CASE)
    unread = list(session._unresolved)
    assert [type(r.pending) for r in unread] == [outcome.Unread, outcome.Unread]
    assert outcome._held - before == sum(r.pending.size for r in unread) > 0
    records = session.records()
    assert [(r.usage.input_tokens, r.usage.output_tokens) for r in records] == [
        _expected(WHOLE_CASE), _expected(STREAM_CASE)]
    assert outcome._held == before


@pytest.mark.parametrize("case", [STREAM_CASE, NO_USAGE_CASE], ids=["usage", "no-usage"])
@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_a_stream_past_the_read_along_size_is_read_as_it_comes_to_the_same_record(
        monkeypatch, case, gzipped):
    _stream(case, gzipped)
    (late,) = session.records()
    session.reset()
    monkeypatch.setattr(exchange, "_READ_ALONG", 64)  # a few events, then read along
    _stream(case, gzipped)
    (pending,) = session._unresolved
    assert isinstance(pending.pending, outcome.Known)  # read on the call path
    (early,) = session.records()
    assert _usage_of(early) == _usage_of(late)
    if case is STREAM_CASE:
        assert (early.usage.input_tokens, early.usage.output_tokens) == _expected(case)
    else:
        assert early.estimated and early.usage.output_tokens > 0


def test_past_the_bound_on_bytes_held_a_response_is_read_at_once(monkeypatch):
    before = outcome._held
    monkeypatch.setattr(outcome, "MAX_HELD", 1)
    _whole(WHOLE_CASE)
    (record,) = session._unresolved
    assert record.pending is None  # read now; only the price is left
    assert outcome._held == before
    assert (record.status, record.usage.input_tokens, record.usage.output_tokens) == (
        "ok", *_expected(WHOLE_CASE))


def test_records_dropped_unread_hold_nothing():
    before = outcome._held
    _stream(STREAM_CASE)
    _whole(WHOLE_CASE)
    assert outcome._held > before
    session.reset()
    assert outcome._held == before


def test_a_response_never_held_gives_nothing_back():
    """An outcome made but not kept (its exchange already recorded) leaves the count."""
    before = outcome._held
    dropped = outcome.Unread(None, "/v1/chat/completions", None, 200, None, None, [b"{}"], 2)
    del dropped
    assert outcome._held == before >= 0
