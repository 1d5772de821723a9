"""Every recorded exchange of the corpus that the openai or anthropic SDK can send, sent by
the real SDK (sync and async, streamed by iteration and through Anthropic's stream
helper) against the replay server, as recorded and as gzip with streams cut at random
bytes. Each call must leave exactly one record whose numbers are the provider's own,
converted to tokmagic's inclusive convention, and priced as genai-prices prices them."""
from __future__ import annotations

import math

import genai_prices
import pytest
import tiktoken

import tokmagic
import tokmagic.warn
from tokmagic.monitor import session
from tokmagic.warn import TokmagicWarning

from . import sdk
from .conftest import all_cases

CASES = all_cases()
TOKEN_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
                "reasoning_tokens")


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


def inclusive(case: dict) -> dict:
    """The case's expected usage in tokmagic's convention: input counts every input token,
    cache reads and writes included (Anthropic reports them apart from input_tokens)."""
    e = case["expected"]
    n = {f: e.get(f) or 0 for f in TOKEN_FIELDS}
    if case["api"] == "messages":
        n["input_tokens"] += n["cached_input_tokens"] + n["cache_write_tokens"]
    return n


def genai_cost(model: str, provider: str, u: dict) -> float:
    """What genai-prices charges for ``u``; NaN where it knows no price."""
    try:
        price = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=u["input_tokens"], cache_read_tokens=u["cached_input_tokens"],
                               cache_write_tokens=u["cache_write_tokens"], output_tokens=u["output_tokens"]),
            model, provider_id=provider)
    except LookupError:
        return math.nan
    return float(price.total_price)


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


def only_record():
    records = session.records()
    assert len(records) == 1, [(r.api, r.status, r.model) for r in records]
    return records[0]


def assert_tokens(record, expected: dict) -> None:
    got = {f: getattr(record.usage, f) for f in TOKEN_FIELDS}
    assert got == expected


def test_every_sdk_case_is_driven():
    """The parametrization covers every case the openai/anthropic SDKs can send, and
    every provider the brief names."""
    driven = {c["id"] for c in CASES if sdk.sdk_of(c)}
    skipped = {c["id"] for c in CASES if not sdk.sdk_of(c)}
    assert all(c["provider"].startswith(("google", "ollama")) for c in CASES if c["id"] in skipped)
    assert {c["provider"] for c in CASES if c["id"] in driven} == set(sdk.HOSTS)
    assert {c["api"] for c in CASES if c["id"] in driven} == {"chat", "completions", "responses",
                                                                "embeddings", "messages"}


@pytest.mark.parametrize("case,mode", PARAMS)
def test_case_is_recorded_exactly(replay, case, mode):
    seen = sdk.run(case, replay, mode)
    record = only_record()
    e = case["expected"]

    # where the call went and what it was
    assert record.provider == case["provider"]
    assert record.host == sdk.HOSTS[case["provider"]]
    assert record.api == case["api"]
    assert record.model == e["model"]
    assert record.source == "capture"

    if sdk.is_error(case):
        import anthropic
        import openai

        assert seen.kind == "raised"
        assert issubclass(seen.exc_type, (openai.APIStatusError, anthropic.APIStatusError))
        assert seen.status_code == case["response"]["status"]
        assert record.status == "error"
        assert record.http_status == case["response"]["status"]
        assert_tokens(record, dict.fromkeys(TOKEN_FIELDS, 0))
        assert record.estimated is False
        assert record.cost_usd == 0.0
        return

    assert record.http_status == case["response"]["status"]
    assert record.stream is sdk.is_stream(case)
    if sdk.is_stream(case):
        assert record.ttft_s > 0 and record.latency_s >= record.ttft_s
    else:
        assert record.latency_s > 0

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
        assert seen.kind in ("response", "stream")
        assert record.status == "ok"
        assert record.estimated is False
        assert record.estimate_method is None
        assert_tokens(record, inclusive(case))
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

    # priced as genai-prices prices it, or NaN (never 0) where it knows no price
    u = {f: getattr(record.usage, f) for f in TOKEN_FIELDS} if record.estimated else inclusive(case)
    expected_cost = genai_cost(e["model"], case["provider"], u)
    if math.isnan(expected_cost):
        assert math.isnan(record.cost_usd)
    else:
        assert record.cost_usd == pytest.approx(expected_cost, rel=1e-12, abs=0)
        assert record.cost_usd > 0

    # the DataFrame shows the same row
    row = tokmagic.usage().iloc[0]
    for f in TOKEN_FIELDS:
        assert row[f] == getattr(record.usage, f)
    assert row["status"] == record.status and row["model"] == record.model
    assert row["estimated"] == record.estimated


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
