"""Every recorded exchange of the corpus, sent by the real SDK user code would use
(openai, anthropic, google-genai, ollama, and mistralai for Mistral's cases: sync and
async, streamed by iteration and through Anthropic's stream helper, google-genai's async
client over httpx2 and over aiohttp) against the replay server, as recorded and as gzip
with streams cut at random bytes. Each call must leave exactly one record whose numbers
are the provider's own, converted to tokmagic's inclusive convention, and priced as
genai-prices prices them (local servers: free)."""
from __future__ import annotations

import math

import pytest
import tiktoken

import tokmagic
import tokmagic.warn
from tokmagic.monitor import session
from tokmagic.warn import TokmagicWarning

from . import expect, sdk
from .conftest import all_cases
from .expect import TOKEN_FIELDS, genai_cost, inclusive, only_record, tokens_of

CASES = all_cases()


def _params():
    out = []
    for case in CASES:
        reason = sdk.skip_reason(case)
        if reason:
            out.append(pytest.param(case, "sync", id=f"{case['id']}-skipped", marks=pytest.mark.skip(reason=reason)))
            continue
        out.extend(pytest.param(case, mode, id=f"{case['id']}-{mode}") for mode in sdk.modes(case))
    return out


PARAMS = _params()


def tiktoken_count(text: str, model: str) -> int:
    try:
        enc = tiktoken.encoding_for_model(model)
    except KeyError:
        enc = tiktoken.get_encoding("o200k_base")
    return len(enc.encode(text, disallowed_special=()))


def request_text(body: dict) -> str:
    """The visible text of a chat request: what any estimate must at least count."""
    parts = []
    for msg in body.get("messages") or ():
        content = msg.get("content")
        if isinstance(content, str):
            parts.append(content)
        for call in msg.get("tool_calls") or ():
            parts.append(call["function"]["name"] + call["function"]["arguments"])
    return "\n".join(parts)


def usage_twin(case: dict) -> dict | None:
    """A recorded case with the same request that did report usage (the truncated stream
    was cut from one): the provider's real count for the same prompt."""
    for other in CASES:
        if (other is not case and other["request"] == case["request"]
                and other["expected"]["usage_reported"]):
            return other
    return None


def assert_tokens(record, expected: dict) -> None:
    assert tokens_of(record) == expected


def test_every_case_is_driven():
    """Every corpus case is sent by a real SDK, every provider and API of the corpus is
    covered, and google-genai's async client is driven over aiohttp as well as httpx2."""
    assert [c["id"] for c in CASES if not sdk.sdk_of(c)] == []
    assert {c["provider"] for c in CASES} == set(sdk.HOSTS) - {"cohere"}  # no Cohere recordings
    assert {c["api"] for c in CASES} == {"chat", "completions", "responses", "embeddings", "messages",
                                         "generate_content", "stream_generate_content", "embed_content",
                                         "ollama_chat", "ollama_generate"}
    modes = {mode for case in CASES for mode in sdk.modes(case)}
    assert {"sync-httpx", "async-httpx", "async-aiohttp", "mistral-sync", "mistral-async"} <= modes


@pytest.mark.parametrize("case,mode", PARAMS)
def test_case_is_recorded_exactly(replay, case, mode):
    seen = sdk.run(case, replay, mode)
    record = only_record()
    e = case["expected"]
    expect.check_call(case, mode, replay, record)

    if sdk.is_error(case):
        expect.check_error(case, seen, record)
        return

    expect.check_timing(case, record)
    if sdk.is_truncated(case):
        import openai

        assert seen.kind == "raised" and seen.exc_type is openai.APIConnectionError
        assert record.status == "interrupted"
        assert record.estimated is True
        assert record.error
        twin = usage_twin(case)
        assert twin is not None
        real_in, real_out = twin["expected"]["input_tokens"], twin["expected"]["output_tokens"]
        # the same prompt really was real_in tokens: the estimate must be close to it
        assert 0.75 * real_in <= record.usage.input_tokens <= 1.25 * real_in
        # the text that arrived before the cut, and no more than the whole answer had
        received = tiktoken_count(seen.streamed_text(), e["model"])
        assert received > 0
        assert received <= record.usage.output_tokens <= real_out
    elif e["usage_reported"]:
        expect.check_reported(case, seen, record)
    else:  # a stream that reports no usage: estimated from what was sent and received
        assert seen.kind == "stream"
        assert record.status == "ok"
        assert record.estimated is True
        assert record.estimate_method.startswith("tiktoken:")
        body = case["request"]["body"]
        visible_in = tiktoken_count(request_text(body), e["model"])
        n_msgs = len(body.get("messages") or ())
        assert visible_in <= record.usage.input_tokens <= visible_in + 4 * n_msgs + 8
        out = tiktoken_count(seen.streamed_text(), e["model"])
        assert out > 0
        assert out <= record.usage.output_tokens <= out + 3
        assert record.usage.cached_input_tokens == record.usage.cache_write_tokens == 0

    expect.check_cost(case, record)
    expect.check_row(record)


def test_corpus_costs_are_checked_against_real_prices():
    """The cost check above is not vacuous: genai-prices knows the corpus's models."""
    priced = [c["id"] for c in CASES if sdk.sdk_of(c) and c["expected"]["usage_reported"]
              and not math.isnan(genai_cost(c["expected"]["model"], c["provider"], inclusive(c)))]
    assert len(priced) >= 30


@pytest.mark.parametrize("case_id", ["openai-chat-basic", "anthropic-messages-stream", "openai-embeddings-small",
                                     "openai-responses-stream"])
def test_unknown_model_costs_nan_not_zero(serve_cases, case_id, monkeypatch):
    """The same exchange naming a model no price list knows: exact tokens, cost NaN (a
    warning names the model), never 0."""
    import copy
    import json

    monkeypatch.setattr(tokmagic.warn, "_seen", set())  # the warning is given once per model
    case = copy.deepcopy(next(c for c in CASES if c["id"] == case_id))
    known = case["expected"]["model"]
    unknown = f"acme-unpriced-{case_id}"  # one name per test: each is warned about once
    resp = case["response"]
    if resp.get("sse"):
        resp["sse"] = resp["sse"].replace(json.dumps(known)[1:-1], unknown)
    else:
        resp["body"] = json.loads(json.dumps(resp["body"]).replace(json.dumps(known), json.dumps(unknown)))
    case["request"]["body"]["model"] = unknown
    base = serve_cases([case])
    with pytest.warns(TokmagicWarning, match=unknown):
        sdk.run(case, base, "sync")
        record = only_record()
    assert record.model == unknown
    assert_tokens(record, inclusive(case))
    assert record.estimated is False
    assert math.isnan(record.cost_usd)
    assert math.isnan(tokmagic.usage().iloc[0]["cost_usd"])
    summary = tokmagic.summary()
    assert summary.unpriced == 1 and summary.cost_usd == 0


def test_repeated_cache_pair_without_header_is_served_in_turn(replay):
    """The cache-write / cache-read pair sent twice with the identical request (no case
    header): two records, the first a write, the second a read, each priced apart."""
    import anthropic

    write = next(c for c in CASES if c["id"] == "anthropic-messages-cache-write")
    read = next(c for c in CASES if c["id"] == "anthropic-messages-cache-read")
    assert write["request"]["body"] == read["request"]["body"]
    client = anthropic.Anthropic(base_url=replay, api_key="test-key", max_retries=0)
    with client:
        first = client.messages.create(**write["request"]["body"])
        second = client.messages.create(**write["request"]["body"])
    got = session.records()
    assert len(got) == 2
    by_usage = sorted(got, key=lambda r: r.usage.cache_write_tokens, reverse=True)
    assert_tokens(by_usage[0], inclusive(write))
    assert_tokens(by_usage[1], inclusive(read))
    assert {first.usage.cache_creation_input_tokens, second.usage.cache_creation_input_tokens} == {
        write["expected"]["cache_write_tokens"], read["expected"]["cache_write_tokens"]}
    # a host tokmagic does not know is named after the wire format's vendor; the row keeps
    # the port, which tells local servers apart
    assert {r.provider for r in got} == {"anthropic"}
    assert {r.host for r in got} == {replay.removeprefix("http://")}
