"""Prices of calls recorded by hand, the user's own prices checked where they are given,
and a pricing failure kept out of the user's code."""
from __future__ import annotations

import math
import re
import warnings
from decimal import Decimal
from fractions import Fraction

import genai_prices
import numpy as np
import pytest

import tokmagic
from tokmagic import pricing, resolve
from tokmagic.monitor import session
from tokmagic.warn import TokmagicWarning

PROMPT = "Summarise the plot of Hamlet in two sentences."
RESPONSE = "Prince Hamlet feigns madness to avenge his father. Nearly everyone dies."


@pytest.fixture(autouse=True)
def no_user_prices():
    yield
    tokmagic.clear_prices()


def priced_with_warnings() -> tuple[list, list[str]]:
    """The session's records, priced now, and the tokmagic warnings pricing gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = session.records()
    return records, [str(w.message) for w in caught if issubclass(w.category, TokmagicWarning)]


def genai_cost(record, provider: str) -> float:
    """What genai-prices itself charges for the record's usage on ``provider``."""
    usage = genai_prices.Usage(input_tokens=record.usage.input_tokens, output_tokens=record.usage.output_tokens)
    return float(genai_prices.calc_price(usage, record.model, provider_id=provider).total_price)


# -- LLMInteractionMonitor ----------------------------------------------------------------

def test_manual_record_without_provider_is_priced_by_its_model_name(fresh_warnings):
    m = tokmagic.LLMInteractionMonitor("gpt-4o")
    m.record_interaction(PROMPT, RESPONSE)
    [r], warned = priced_with_warnings()
    assert warned == []
    assert r.provider == "manual" and r.model == "gpt-4o"
    assert (r.usage.input_tokens, r.usage.output_tokens) == m.get_total_tokens()
    assert r.usage.input_tokens > 5 and r.usage.output_tokens > 5
    assert r.cost_usd == pytest.approx(genai_cost(r, "openai"), rel=1e-12) and r.cost_usd > 0


def test_manual_record_with_provider(fresh_warnings):
    m = tokmagic.LLMInteractionMonitor("claude-3-5-sonnet", provider="anthropic")
    m.record_interaction(PROMPT, RESPONSE)
    other = tokmagic.LLMInteractionMonitor()  # model and provider given per call
    other.record_interaction(PROMPT, RESPONSE, model="gpt-4o-mini", provider="openai")
    [claude, mini], warned = priced_with_warnings()
    assert warned == []
    assert (claude.provider, mini.provider) == ("anthropic", "openai")
    assert claude.cost_usd == pytest.approx(genai_cost(claude, "anthropic"), rel=1e-12) and claude.cost_usd > 0
    assert mini.cost_usd == pytest.approx(genai_cost(mini, "openai"), rel=1e-12) and mini.cost_usd > 0
    assert claude.cost_usd > mini.cost_usd  # the provider's own rates, not one table for all


def two_unpriced(model: str) -> tuple[list, list[str]]:
    """Two interactions recorded by hand for ``model`` and read: both unpriced. Their
    records, and the warnings given."""
    m = tokmagic.LLMInteractionMonitor(model)
    m.record_interaction(PROMPT, RESPONSE)
    m.record_interaction(PROMPT, RESPONSE)
    records, warned = priced_with_warnings()
    assert len(records) == 2 and all(math.isnan(r.cost_usd) for r in records)
    return records, warned


def test_manual_record_of_an_unknown_model_is_unpriced_with_one_warning(fresh_warnings):
    records, warned = two_unpriced("my-model-x")
    assert len(warned) == 1 and "'my-model-x'" in warned[0] and "tokmagic.set_price(" in warned[0]
    assert tokmagic.summary().unpriced == 2


@pytest.mark.parametrize("prompt, response, arg, got", [
    ([{"role": "user", "content": "hi"}], "yo", "prompt", "list"),
    (b"hi", "yo", "prompt", "bytes"),
    ("hi", 42, "response", "int"),
    ("hi", {"content": "yo"}, "response", "dict"),
])
def test_manual_record_of_what_is_not_text_is_a_type_error(prompt, response, arg, got):
    m = tokmagic.LLMInteractionMonitor("gpt-4o-mini")
    with pytest.raises(TypeError, match=f"^record_interaction: {arg} must be the {arg}'s text "
                                        rf"\(a str\), got {got}; pass the text itself"):
        m.record_interaction(prompt, response)
    assert m.get_total_tokens() == (0, 0) and session.records() == []  # nothing half-recorded


def test_manual_record_of_none_counts_as_empty_text():
    m = tokmagic.LLMInteractionMonitor("gpt-4o-mini")
    m.record_interaction(None, RESPONSE)
    m.record_interaction(PROMPT, None)
    [no_prompt, no_response] = session.records()
    assert no_prompt.usage.input_tokens == 0 and no_prompt.usage.output_tokens > 5
    assert no_response.usage.input_tokens > 5 and no_response.usage.output_tokens == 0


# -- set_price and set_deployment check what they are given ---------------------------------

REJECTED = [
    (("m", None, 1), {}, TypeError, "input", None),
    (("m", "1.5", 2), {}, TypeError, "input", "1.5"),
    (("m", 1, -1), {}, ValueError, "output", -1),
    (("m", math.nan, 1), {}, ValueError, "input", math.nan),
    (("m", 1, math.inf), {}, ValueError, "output", math.inf),
    (("m", True, 1), {}, TypeError, "input", True),
    (("m", np.bool_(True), 1), {}, TypeError, "input", np.bool_(True)),
    (("m", Decimal("NaN"), 1), {}, ValueError, "input", Decimal("NaN")),
    (("m", Decimal("sNaN"), 1), {}, ValueError, "input", Decimal("sNaN")),
    (("m", 1, Decimal("Infinity")), {}, ValueError, "output", Decimal("Infinity")),
    (("m", 1, Decimal("-0.5")), {}, ValueError, "output", Decimal("-0.5")),
    (("m", Fraction(10 ** 400), 1), {}, ValueError, "input", Fraction(10 ** 400)),
    (("m", 1, 1), {"cached_input": -0.5}, ValueError, "cached_input", -0.5),
    (("m", 1, 1), {"cache_write": "2"}, TypeError, "cache_write", "2"),
    (("", 1, 1), {}, ValueError, "model", ""),
    ((None, 1, 1), {}, TypeError, "model", None),
]


@pytest.mark.parametrize("args, kwargs, error, name, value", REJECTED,
                         ids=[f"{r[3]}={r[4]!r}" for r in REJECTED])
def test_set_price_rejects_what_is_not_a_price(args, kwargs, error, name, value):
    with pytest.raises(error, match=f"^tokmagic.set_price: {name} must be .*, got {re.escape(repr(value))}$"):
        tokmagic.set_price(*args, **kwargs)
    assert pricing._overrides == {}  # nothing kept that would fail later


@pytest.mark.parametrize("name, model, error, arg", [("", "gpt-4o", ValueError, "name"),
                                                     ("eval", None, TypeError, "model"),
                                                     ("eval", " ", ValueError, "model")])
def test_set_deployment_rejects_what_is_not_a_name(name, model, error, arg):
    with pytest.raises(error, match=f"^tokmagic.set_deployment: {arg} must be "):
        tokmagic.set_deployment(name, model)
    assert pricing._deployments == {}


def test_set_price_accepts_ints_floats_and_zero(fresh_warnings):
    tokmagic.set_price("my-model-x", 0, 1.5, cached_input=0.0, cache_write=None)
    m = tokmagic.LLMInteractionMonitor("my-model-x")
    m.record_interaction(PROMPT, RESPONSE)
    [r], warned = priced_with_warnings()
    assert warned == []
    assert r.cost_usd == pytest.approx(r.usage.output_tokens * 1.5 / 1e6, rel=1e-12) and r.cost_usd > 0


@pytest.mark.parametrize("rate", [Decimal("0.5"), Fraction(1, 2), np.float32(0.5), np.float64(0.5)],
                         ids=lambda r: type(r).__name__)
def test_set_price_accepts_decimals_fractions_and_numpy_numbers_as_floats(fresh_warnings, rate):
    tokmagic.set_price("my-model-x", rate, 1, cached_input=rate, cache_write=Decimal("-0"))
    price = pricing._overrides["my-model-x"]
    assert price == pricing.Price(0.5, 1.0, 0.5, 0.0)
    assert all(type(v) is float for v in vars(price).values())
    assert math.copysign(1, price.cache_write) == 1  # no "-$0"
    m = tokmagic.LLMInteractionMonitor("my-model-x")
    m.record_interaction(PROMPT, RESPONSE)
    [r], warned = priced_with_warnings()
    assert warned == [] and type(r.cost_usd) is float
    assert r.cost_usd == pytest.approx((r.usage.input_tokens * 0.5 + r.usage.output_tokens) / 1e6, rel=1e-12)


# -- a failure inside pricing stays inside tokmagic -------------------------------------------

def test_pricing_failure_is_contained(monkeypatch, fresh_warnings):
    def broken(*args, **kwargs):
        raise RuntimeError("price table is corrupt")

    monkeypatch.setattr(resolve, "cost_usd", broken)
    records, warned = two_unpriced("gpt-4o")
    assert len(warned) == 1 and "price table is corrupt" in warned[0] and "'gpt-4o'" in warned[0]
    df = tokmagic.usage()
    assert len(df) == 2 and df["cost_usd"].isna().all()
    assert df["input_tokens"].tolist() == [r.usage.input_tokens for r in records]
    assert math.isnan(tokmagic.usage(by="model").loc["gpt-4o", "cost_usd"])
