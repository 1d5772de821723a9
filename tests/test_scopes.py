"""A cell's or block's summary counts the calls it made, not the calls that share its
tag; tokmagic.track() leaves capture as it found it; prices set after calls were
recorded reprice them."""
from __future__ import annotations

import math

import httpx2
import openai
import pytest
from IPython.utils.capture import capture_output

import tokmagic
from tokmagic import capture
from tokmagic.ipython.panel_state import LiveUpdates
from tokmagic.monitor import session

from .conftest import load_case
from .test_ipython import run

BASIC = load_case("openai-chat-basic")
INPUT, OUTPUT = BASIC["expected"]["input_tokens"], BASIC["expected"]["output_tokens"]

#: A thread started by one cell that makes its call when told to, during a later cell.
LATE_THREAD = (
    "import threading\ngo, done = threading.Event(), threading.Event()\n"
    "def late():\n    go.wait(5)\n    chat('openai-chat-basic')\n    done.set()\n"
    "threading.Thread(target=late).start()\n"
    "r = chat('openai-chat-basic')\n")


@pytest.mark.parametrize("tag", ["exp", ""])
def test_llm_track_counts_its_own_calls_not_an_earlier_cells_thread(ip, tag):
    run(ip, f"%%llm_track {tag} -q\n" + LATE_THREAD)
    with capture_output():
        run(ip, f"%%llm_track {tag} -o s\ngo.set()\nassert done.wait(5)\nr = chat('openai-chat-basic')")
    s = ip.user_ns["s"]
    assert (s.calls, s.usage.input_tokens) == (1, INPUT)
    first, late, own = sorted(session.records(), key=lambda r: r.time)
    assert late.background and late.cell is None and not own.background


def test_a_block_inside_a_cell_counts_for_the_cell_too(ip):
    run(ip, "%%llm_track outer -q -o s\nimport tokmagic\nr = chat('openai-chat-basic')\n"
            "with tokmagic.track('inner') as inner:\n    r = chat('openai-chat-basic')")
    assert (ip.user_ns["s"].calls, ip.user_ns["inner"].calls) == (2, 1)
    assert [r.tag for r in session.records()] == ["outer", "inner"]


def test_a_hand_recorded_interaction_counts_for_its_block():
    with tokmagic.track("by-hand") as s:
        tokmagic.LLMInteractionMonitor("gpt-4o").record_interaction("Hello there", "Hi!")
    assert (s.calls, s.usage.input_tokens, s.usage.output_tokens) == (1, 2, 2)


def test_llm_track_tag_may_be_quoted(ip):
    run(ip, "%%llm_track 'prompt v2' -q\nr = chat('openai-chat-basic')")
    assert session.records()[0].tag == "prompt v2"


def _client(model: str = BASIC["response"]["body"]["model"]) -> openai.OpenAI:
    body = {**BASIC["response"]["body"], "model": model}
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=body))
    return openai.OpenAI(api_key="x", base_url="https://api.openai.com/v1",
                         http_client=httpx2.Client(transport=transport))


def _call(client: openai.OpenAI) -> None:
    client.chat.completions.create(**BASIC["request"]["body"])


def test_track_leaves_capture_as_it_found_it():
    tokmagic.uninstall()
    original = httpx2.Client.__dict__["send"]
    client = _client()
    with tokmagic.track("script") as s:
        _call(client)
        with tokmagic.track("nested"):
            _call(client)
        _call(client)  # the nested block's end did not stop capture for this one
    assert (s.calls, len(session.records())) == (3, 3)
    assert httpx2.Client.__dict__["send"] is original and not capture.installed()
    _call(client)
    assert len(session.records()) == 3  # off again, as before the block

    tokmagic.install()
    with tokmagic.track("on"):
        _call(client)
    assert capture.installed() and httpx2.Client.__dict__["send"] is not original
    _call(client)
    assert len(session.records()) == 5


def test_uninstall_inside_a_block_takes_effect_when_it_ends():
    client = _client()
    with tokmagic.track("block") as s:
        tokmagic.uninstall()
        _call(client)
    assert s.calls == 1 and not capture.installed()
    _call(client)
    assert len(session.records()) == 1


def test_a_price_set_later_reprices_recorded_calls(fresh_warnings):
    model = "house-model-7"
    try:
        _call(_client(model))
        panel = LiveUpdates(session, draw=lambda state: None)
        assert math.isnan(tokmagic.usage().cost_usd[0]) and panel.read().session.unpriced == 1

        tokmagic.set_price(model, input=2.0, output=8.0)
        expected = (INPUT * 2.0 + OUTPUT * 8.0) / 1e6
        assert tokmagic.usage().cost_usd[0] == pytest.approx(expected)
        state = panel.read().session
        assert (state.unpriced, state.cost_usd) == (0, pytest.approx(expected))

        tokmagic.set_price(model, input=1.0, output=1.0)
        assert tokmagic.summary().cost_usd == pytest.approx((INPUT + OUTPUT) / 1e6)
    finally:
        tokmagic.clear_prices()
    assert math.isnan(tokmagic.usage().cost_usd[0])


def test_a_call_still_awaiting_its_answer_is_counted_as_running():
    import threading

    entered, answer = threading.Event(), threading.Event()
    body = BASIC["response"]["body"]

    def slow(request):
        entered.set()
        answer.wait(5)
        return httpx2.Response(200, json=body)
    client = openai.OpenAI(api_key="x", base_url="https://api.openai.com/v1",
                           http_client=httpx2.Client(transport=httpx2.MockTransport(slow)))
    with tokmagic.track("slow") as s:
        worker = threading.Thread(target=_call, args=(client,))
        worker.start()
        assert entered.wait(5)
    assert (s.calls, s.running) == (0, 1) and "1 still running" in str(s)
    answer.set()
    worker.join(5)
    (record,) = session.records()
    assert (record.tag, record.background, record.status) == ("slow", False, "ok")
