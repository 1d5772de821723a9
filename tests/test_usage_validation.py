"""A provider's usage counts are believed only when they are counts. A negative, huge,
fractional or non-numeric count makes the response unparsed (cost NaN), never a made-up
0 or an int64 overflow in ``usage()``; the user's SDK call gets what it gets without
tokmagic. The real openai SDK is driven against the local replay server."""
from __future__ import annotations

import copy
import json
import math
import re
import warnings
from typing import Callable

import openai
import pytest

import tokmagic
from tokmagic.protocols.base import MAX_COUNT, as_int
from tokmagic.protocols.bedrock import INVOKE
from tokmagic.warn import TokmagicWarning

from .conftest import load_case
from .test_robustness import same_with_and_without

# -- as_int ------------------------------------------------------------------------------

@pytest.mark.parametrize("value, count", [(None, 0), (0, 0), (7, 7), (MAX_COUNT, 10**12), (12.0, 12)])
def test_as_int_reads_counts(value, count):
    got = as_int(value)
    assert got == count and type(got) is int


@pytest.mark.parametrize("value", [10**12 + 1, -1, 12.5, -3.0, 1e30, float("inf"), float("nan"), True, False,
                                   "3", [3], {"n": 3}])
def test_as_int_rejects_what_is_not_a_count(value):
    with pytest.raises(ValueError, match=f"^not a token count: {re.escape(repr(value))}$"):
        as_int(value)


@pytest.mark.parametrize("values, usage", [(("12", "7"), (12, 7)), ((" 12 ", "0"), (12, 0)),
                                           (("-5", "7"), None), (("12", str(10**13)), None),
                                           (("lots", "7"), None), (("1.5", "7"), None), (("12", None), None)])
def test_bedrock_header_counts_are_checked(values, usage):
    """Bedrock's InvokeModel count headers: a count is read; anything else leaves the
    tokens to be estimated."""
    got = INVOKE.header_usage(dict(zip(INVOKE.usage_headers, values)))
    assert (None if got is None else (got.input_tokens, got.output_tokens)) == usage


# -- whole answers through the openai SDK -----------------------------------------------------

WHOLE = load_case("openai-chat-basic")
#: prompt_tokens as served -> the record's status.
PROMPT_TOKENS = {"negative": (-5, "unparsed"), "huge": (1e30, "unparsed"), "words": ("lots", "unparsed"),
                 "fraction": (12.5, "unparsed"), "beyond-limit": (10**13, "unparsed"),
                 "valid": (15, "ok"), "integral-float": (15.0, "ok")}


def whole_case(name: str) -> dict:
    case = copy.deepcopy(WHOLE)
    case["id"] = name
    case["response"]["body"]["usage"]["prompt_tokens"] = PROMPT_TOKENS[name][0]
    return case


def chat(base: str, case_id: str, **kw):
    """The user's call, as user code makes it; returns what the SDK returns (a stream's
    chunks as a list)."""
    client = openai.OpenAI(base_url=base + "/v1", api_key="test", max_retries=0)
    result = client.chat.completions.create(**WHOLE["request"]["body"] | kw,
                                            extra_headers={"X-Replay-Case": case_id})
    return list(result) if kw.get("stream") else result


@pytest.mark.parametrize("name", sorted(PROMPT_TOKENS))
def test_usage_counts_in_a_whole_answer(serve_cases, name):
    served, status = PROMPT_TOKENS[name]
    base = serve_cases([whole_case(name)])
    seen, [r] = same_with_and_without(lambda: chat(base, name))
    assert seen.usage.prompt_tokens == served  # the SDK's object, as it is without tokmagic
    assert r.status == status and r.http_status == 200 and r.estimated is False
    if status == "ok":
        assert (r.usage.input_tokens, r.usage.output_tokens) == (15, WHOLE["expected"]["output_tokens"])
        assert r.cost_usd > 0
    else:
        assert r.usage.total_tokens == 0 and math.isnan(r.cost_usd)
        assert r.model == WHOLE["request"]["body"]["model"]  # named by the request
    df = tokmagic.usage()
    assert df["status"].tolist() == [status] and df["input_tokens"].tolist() == [r.usage.input_tokens]
    by_model = tokmagic.usage(by="model")
    assert by_model["calls"].tolist() == [1] and by_model.index.tolist() == [r.model]


# -- a stream whose last chunk carries junk usage ---------------------------------------------

def stream_case(case_id: str, usage: Callable[[dict], dict]) -> dict:
    """The recorded stream with its usage chunk's usage replaced by ``usage(recorded)``."""
    case = copy.deepcopy(load_case("openai-chat-stream-include-usage"))
    case["id"] = case_id
    events = case["response"]["sse"].split("\n\n")
    usage_at = max(i for i, e in enumerate(events) if e.startswith("data: {") and '"usage":{' in e)
    chunk = json.loads(events[usage_at].removeprefix("data: "))
    chunk["usage"] = usage(chunk["usage"])
    events[usage_at] = "data: " + json.dumps(chunk)
    case["response"]["sse"] = "\n\n".join(events)
    return case


def junk_stream_case() -> dict:
    return stream_case("junk-stream-usage", lambda usage: usage | {"prompt_tokens": "lots"})


def test_junk_usage_in_a_stream(serve_cases, fresh_warnings):
    case = junk_stream_case()
    base = serve_cases([case])
    body = case["request"]["body"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chunks, [r] = same_with_and_without(lambda: chat(base, case["id"], **body))
    assert len(chunks) > 5 and chunks[-1].usage.prompt_tokens == "lots"  # unchanged for the user
    assert r.status == "unparsed" and r.stream is True
    assert r.usage.total_tokens == 0 and math.isnan(r.cost_usd)
    warned = [str(w.message) for w in caught if issubclass(w.category, TokmagicWarning)]
    assert len(warned) == 1 and "not a token count: 'lots'" in warned[0]
    assert tokmagic.usage()["status"].tolist() == ["unparsed"]
    assert tokmagic.usage(by="model")["calls"].sum() == 1


# -- usage objects that hold no count ----------------------------------------------------------

#: Usage objects as a server may send them that report no count of their format: the
#: tokens are estimated and flagged, never taken as a reported 0.
NO_COUNTS = {"empty": {}, "all-null": {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None},
             "total-only": {"total_tokens": 12}, "other-format": {"input_tokens": 15, "output_tokens": 9}}


@pytest.mark.parametrize("name", sorted(NO_COUNTS))
def test_a_whole_answer_whose_usage_has_no_counts_is_estimated(serve_cases, name):
    case = copy.deepcopy(WHOLE)
    case["id"] = name
    case["response"]["body"]["usage"] = NO_COUNTS[name]
    base = serve_cases([case])
    _, [r] = same_with_and_without(lambda: chat(base, name))
    assert (r.status, r.estimated) == ("ok", True)
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0 and r.cost_usd > 0


@pytest.mark.parametrize("name", ["empty", "all-null"])
def test_a_stream_whose_usage_has_no_counts_is_estimated(serve_cases, name):
    case = stream_case(f"stream-{name}", lambda usage: NO_COUNTS[name])
    base = serve_cases([case])
    _, [r] = same_with_and_without(lambda: chat(base, case["id"], **case["request"]["body"]))
    assert (r.status, r.estimated) == ("ok", True)
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0


def test_an_anthropic_answer_with_an_empty_usage_is_estimated(serve_cases):
    import anthropic

    case = copy.deepcopy(load_case("anthropic-messages-basic"))
    case["id"] = "anthropic-empty-usage"
    case["response"]["body"]["usage"] = {}
    base = serve_cases([case])
    client = anthropic.Anthropic(base_url=base, api_key="test", max_retries=0)
    _, [r] = same_with_and_without(lambda: client.messages.create(
        **case["request"]["body"], extra_headers={"X-Replay-Case": case["id"]}))
    assert (r.status, r.estimated) == ("ok", True) and r.usage.input_tokens > 0
