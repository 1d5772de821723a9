"""tokmagic changes nothing that user code sees: for every corpus case, through every
SDK that sends it (openai, anthropic, google-genai over httpx2 and aiohttp, ollama,
mistralai), sync and async, whole, streamed and through Anthropic's stream helper, the
objects the SDK returns (or the exception it raises) are identical with tokmagic
installed and uninstalled. The SDKs use their own default HTTP clients here, aimed at the
replay server. tokmagic's own cases (tests/cases: Cohere, more Ollama and Gemini) are
compared the same way. Raw responses of openai and anthropic keep working too
(``elapsed`` included)."""
from __future__ import annotations

import dataclasses
import datetime
import itertools
import re

import pytest

import tokmagic
from tokmagic.monitor import session

from . import sdk
from .conftest import all_cases, own_cases, replay_server

CASES = [c for c in all_cases() if sdk.sdk_of(c)]
RAW_CASES = [c for c in CASES if sdk.sdk_of(c) in ("openai", "anthropic")]


#: An HTTP-date as servers send it (IMF-fixdate, RFC 9110 5.6.7): the replay server's Date
#: header, a clock that may tick between the run without tokmagic and the run with it.
_HTTP_DATE = re.compile(r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
                        r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT\b")


def _comparable(seen: sdk.Seen):
    """``seen.comparable()`` with each HTTP-date in the exception's text masked: some SDKs'
    exceptions print the response headers (Cohere's ApiError does), Date included. Only
    the date's value is masked, so a header tokmagic dropped or changed still differs.
    (Objects that carry headers, google-genai's sdk_http_response, drop Date in
    sdk_google._dump.)"""
    if seen.message:
        seen = dataclasses.replace(seen, message=_HTTP_DATE.sub("<http-date>", seen.message))
    return seen.comparable()


def _both(fn):
    """``fn()`` without tokmagic, then with it; and the records each run left."""
    tokmagic.uninstall()
    try:
        session.reset()
        off = fn()
        off_records = session.records()
    finally:
        tokmagic.install()
    session.reset()
    on = fn()
    return off, on, off_records, session.records()


def _assert_same(case: dict, off, on, off_records: list, on_records: list) -> None:
    assert off_records == []
    assert len(on_records) == 1
    assert _comparable(on) == _comparable(off)
    # the comparison compares something: what the case holds
    if sdk.is_error(case) or sdk.is_truncated(case):
        assert on.kind == "raised"
    else:
        assert on.kind == ("stream" if sdk.is_stream(case) else "response")
        assert on.value
    if on.kind == "raised" and on.exc is not None and getattr(on.exc, "body", None) is not None:
        assert on.exc.body == off.exc.body


@pytest.mark.parametrize("case,mode", [pytest.param(c, m, id=f"{c['id']}-{m}") for c in CASES for m in sdk.modes(c)])
def test_sdk_sees_the_same_objects(replay, case, mode):
    _assert_same(case, *_both(lambda: sdk.run(case, replay, mode, routed=False)))


@pytest.mark.parametrize("case,mode", [pytest.param(c, m, id=f"{c['id']}-{m}") for c in own_cases()
                                       for m in sdk.modes(c)])
def test_sdk_sees_the_same_objects_own_cases(serve_cases, case, mode):
    base = serve_cases([case], compress=True, split_seed=11)
    _assert_same(case, *_both(lambda: sdk.run(case, base, mode, routed=False)))


def test_only_the_date_of_an_exception_text_is_masked():
    """An exception that prints the headers compares equal across a tick of the server's
    clock, and still differs on anything else."""
    def seen(date: str, server: str = "corpus-replay/1") -> sdk.Seen:
        headers = {"server": server, "date": date, "content-type": "application/json"}
        return sdk.Seen("raised", [], exc_type=RuntimeError, status_code=401,
                        message=f"headers: {headers}, status_code: 401, body: {{'message': 'no'}}")

    assert _comparable(seen("Tue, 05 Nov 2024 16:48:15 GMT")) == _comparable(seen("Tue, 05 Nov 2024 16:48:16 GMT"))
    assert _comparable(seen("Tue, 05 Nov 2024 16:48:15 GMT")) != _comparable(seen("Tue, 05 Nov 2024 16:48:15 GMT",
                                                                                  server="tokmagic"))
    assert _comparable(seen("Tue, 05 Nov 2024 16:48:15 GMT")) != _comparable(seen(""))  # a Date dropped


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_tick_of_the_server_clock_between_the_runs_is_no_difference(serve_cases, monkeypatch, mode):
    """The flake this masking fixes, made certain: every answer's Date is a second later."""
    seconds = itertools.count(15)
    monkeypatch.setattr(replay_server.Handler, "date_time_string",
                        lambda self, timestamp=None: f"Tue, 05 Nov 2024 16:48:{next(seconds):02d} GMT")
    case = next(c for c in own_cases() if c["id"] == "cohere-v2-chat-error-401")
    base = serve_cases([case])
    off, on, off_records, on_records = _both(lambda: sdk.run(case, base, mode, routed=False))
    assert on.message != off.message and "16:48:" in on.message  # the headers are in the text
    _assert_same(case, off, on, off_records, on_records)


def test_every_sdk_is_compared():
    """The comparisons above cover every SDK and both of google-genai's async transports."""
    assert {sdk.sdk_of(c) for c in CASES} == {"openai", "anthropic", "google-genai", "ollama"}
    assert {sdk.sdk_of(c) for c in own_cases()} == {"openai", "google-genai", "ollama", "cohere"}
    modes = {m for c in CASES for m in sdk.modes(c)}
    assert {"sync-httpx", "async-httpx", "async-aiohttp", "mistral-sync", "mistral-async"} <= modes


RAW = [pytest.param(c, m, id=f"{c['id']}-{m}") for c in RAW_CASES
       for m in ("raw-sync", "raw-async", "streaming-sync", "streaming-async")]


@pytest.mark.parametrize("case,mode", RAW)
def test_raw_responses_are_unchanged_and_elapsed_works(replay, case, mode):
    streaming = mode.startswith("streaming")
    fn = sdk.run_raw_async if mode.endswith("async") else sdk.run_raw
    (off, off_elapsed), (on, on_elapsed), off_records, on_records = _both(
        lambda: fn(case, replay, streaming=streaming, routed=False))
    assert off_records == [] and len(on_records) == 1
    assert _comparable(on) == _comparable(off)
    if sdk.is_error(case) or sdk.is_truncated(case):
        assert on.kind == "raised"
        return
    assert on.kind == ("stream" if sdk.is_stream(case) else "response"), on.message
    assert on.value
    # the response's elapsed time is there, as without tokmagic
    assert isinstance(off_elapsed, datetime.timedelta)
    assert isinstance(on_elapsed, datetime.timedelta)
    assert on_elapsed.total_seconds() > 0
    record = on_records[0]
    assert record.status == "ok"
    if case["expected"]["usage_reported"]:
        assert record.usage.output_tokens == case["expected"]["output_tokens"]
        assert record.estimated is False


def test_install_and_uninstall_are_idempotent(replay):
    import httpx
    import httpx2

    originals = {cls: cls.__dict__["send"] for cls in (httpx2.Client, httpx2.AsyncClient)}
    tokmagic.install()
    assert {cls: cls.__dict__["send"] for cls in originals} == originals
    tokmagic.uninstall()
    tokmagic.uninstall()
    restored = {cls: cls.__dict__["send"] for cls in originals}
    assert all(not hasattr(fn, "__tokmagic_original__") for fn in restored.values())
    assert all(not hasattr(cls.__dict__["send"], "__tokmagic_original__")
               for cls in (httpx.Client, httpx.AsyncClient))
    tokmagic.install()
    tokmagic.install()
    case = next(c for c in CASES if c["id"] == "openai-chat-basic")
    sdk.run(case, replay, "sync", routed=False)
    assert len(session.records()) == 1
