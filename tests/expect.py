"""What one call made through a real SDK must leave behind, derived from the case it
replays: shared by the corpus tests and the tests of tokmagic's own cases (tests/cases).

A case's ``expected`` is in the provider's own terms (see the corpus README); tokmagic
records the inclusive convention, so the conversion here is the convention itself:
Anthropic's input_tokens exclude cache reads and writes, Gemini's candidatesTokenCount
excludes thoughts."""
from __future__ import annotations

import math

import genai_prices
import pytest

import tokmagic
from tokmagic.monitor import session

from . import sdk

TOKEN_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
                "reasoning_tokens")
#: Own cases tokmagic cannot read yet, and what each waits for: their tests are strict
#: expected failures, so they start passing (and must be unmarked) once that lands.
#: Local servers: their calls cost 0 by declaration, whatever any price list says.
FREE_PROVIDERS = {"ollama"}
#: genai-prices keeps Vertex AI's Gemini prices under "google".
_GENAI_PROVIDER = {"google-vertex": "google"}
#: tokmagic names an API once, streamed or not (the record's ``stream`` says which); the
#: corpus names Gemini's streaming endpoint apart.
_API = {"stream_generate_content": "generate_content"}


def inclusive(case: dict) -> dict:
    """The case's expected usage in tokmagic's convention: input counts every input token,
    cache reads and writes included (Anthropic reports them apart from input_tokens), and
    output counts every output token, thoughts included (Gemini reports them apart)."""
    e = case["expected"]
    n = {f: e.get(f) or 0 for f in TOKEN_FIELDS}
    if case["api"] == "messages":
        n["input_tokens"] += n["cached_input_tokens"] + n["cache_write_tokens"]
    if case["provider"].startswith("google"):
        n["output_tokens"] += n["reasoning_tokens"]
    return n


def genai_cost(model: str, provider: str, u: dict) -> float:
    """What genai-prices charges for ``u``; NaN where it knows no price. It wants Gemini
    names without their "models/" prefix."""
    try:
        price = genai_prices.calc_price(
            genai_prices.Usage(input_tokens=u["input_tokens"], cache_read_tokens=u["cached_input_tokens"],
                               cache_write_tokens=u["cache_write_tokens"], output_tokens=u["output_tokens"]),
            model.removeprefix("models/"), provider_id=_GENAI_PROVIDER.get(provider, provider))
    except LookupError:
        return math.nan
    return float(price.total_price)


def only_record():
    records = session.records()
    assert len(records) == 1, [(r.api, r.status, r.model) for r in records]
    return records[0]


def tokens_of(record) -> dict:
    return {f: getattr(record.usage, f) for f in TOKEN_FIELDS}


def check_call(case: dict, mode: str, base: str, record) -> None:
    """Where the call went and what it was."""
    assert record.provider == case["provider"]
    assert record.host == sdk.recorded_host(case, mode, base)  # with the port: it tells local servers apart
    assert record.api == _API.get(case["api"], case["api"])
    assert record.model == case["expected"]["model"]
    assert record.source == "capture"


def check_error(case: dict, seen: sdk.Seen, record) -> None:
    """An HTTP error: the SDK raised its status error, the record says so, costs 0."""
    assert seen.kind == "raised"
    assert issubclass(seen.exc_type, sdk.status_errors())
    assert seen.status_code == case["response"]["status"]
    assert record.status == "error"
    assert record.http_status == case["response"]["status"]
    assert tokens_of(record) == dict.fromkeys(TOKEN_FIELDS, 0)
    assert record.estimated is False
    assert record.cost_usd == 0.0


def check_timing(case: dict, record) -> None:
    assert record.http_status == case["response"]["status"]
    assert record.stream is sdk.is_stream(case)
    if sdk.is_stream(case):
        assert record.ttft_s > 0 and record.latency_s >= record.ttft_s
    else:
        assert record.latency_s > 0


def check_reported(case: dict, seen: sdk.Seen, record) -> None:
    """Usage the provider reported: taken exactly, nothing estimated."""
    assert seen.kind == ("stream" if sdk.is_stream(case) else "response")
    assert seen.value
    assert record.status == "ok"
    assert record.estimated is False
    assert record.estimate_method is None
    assert tokens_of(record) == inclusive(case)


def check_cost(case: dict, record) -> None:
    """Free by declaration for local servers; else priced as genai-prices prices it, or
    NaN (never 0) where it knows no price."""
    if case["provider"] in FREE_PROVIDERS:
        assert record.cost_usd == 0.0
        return
    u = tokens_of(record) if record.estimated else inclusive(case)
    expected_cost = genai_cost(case["expected"]["model"], case["provider"], u)
    if math.isnan(expected_cost):
        assert math.isnan(record.cost_usd)
    else:
        assert record.cost_usd == pytest.approx(expected_cost, rel=1e-12, abs=0)
        assert record.cost_usd > 0


def check_row(record) -> None:
    """The DataFrame shows the same row."""
    row = tokmagic.usage().iloc[0]
    for f in TOKEN_FIELDS:
        assert row[f] == getattr(record.usage, f)
    assert row["status"] == record.status and row["model"] == record.model
    assert row["estimated"] == record.estimated
    assert row["cost_usd"] == record.cost_usd or (math.isnan(row["cost_usd"]) and math.isnan(record.cost_usd))
