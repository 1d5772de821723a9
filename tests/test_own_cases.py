"""tokmagic's own cases (tests/cases: written for its tests, not recordings) for what the
corpus holds no recording of: Cohere's API (v2 chat whole, streamed and refused, v2
embed, v1 chat whole and streamed), Ollama's native streamed generate, embed and error,
Ollama's OpenAI-compatible API on its default port, Gemini answers with cached content,
and OpenAI chat with n=2 choices. Each is sent by the real SDK user code would use, sync
and async, from a replay server as written and as gzip with streams cut at random bytes,
and must leave exactly one record with the case's numbers, as the corpus cases must."""
from __future__ import annotations

import math

import pytest
import tiktoken

from . import expect, sdk
from .conftest import all_cases, load_own, own_cases
from .expect import only_record

CASES = own_cases()
#: The cases whose usage is reported (or that are refused): their records must be exact.
EXACT = [c for c in CASES if c["expected"]["usage_reported"] or sdk.is_error(c)]
MARK = "written for tokmagic's tests, not a recording"
#: The replay server's two deliveries, as the corpus tests use them.
DELIVERIES = {"plain": {}, "compressed-split": {"compress": True, "split_seed": 11}}


def test_own_cases_are_marked_and_cover_what_the_corpus_lacks():
    corpus_ids = {c["id"] for c in all_cases()}
    assert len(CASES) >= 10
    for case in CASES:
        assert case["source"] == MARK and case["notes"].startswith(MARK)
        assert case["id"] not in corpus_ids
        assert sdk.sdk_of(case) is not None
    kinds = {(c["provider"], c["api"], sdk.is_stream(c), sdk.is_error(c)) for c in CASES}
    assert {("cohere", "chat", False, False), ("cohere", "chat", True, False), ("cohere", "chat", False, True),
            ("cohere", "embed", False, False), ("ollama", "ollama_generate", True, False),
            ("ollama", "ollama_embed", False, False), ("ollama", "ollama_chat", False, True),
            ("ollama", "chat", False, False), ("ollama", "chat", True, False),
            ("google", "generate_content", False, False), ("google", "stream_generate_content", True, False),
            ("google", "embed_content", False, False)} <= kinds
    assert any(c["request"]["path"].startswith("/v1/") and c["provider"] == "cohere" for c in CASES)
    assert any(c["request"]["path"] == "/v1/chat" and sdk.is_stream(c) for c in CASES)  # v1's own stream format
    assert all(c["expected"]["cached_input_tokens"] for c in CASES if c["api"].endswith("generate_content"))
    # the cost check is not vacuous: genai-prices knows the hosted models of these cases
    priced = [c["id"] for c in CASES if c["expected"]["usage_reported"] and c["provider"] not in expect.FREE_PROVIDERS
              and not math.isnan(expect.genai_cost(c["expected"]["model"], c["provider"], expect.inclusive(c)))]
    assert {"cohere-v2-chat", "cohere-v2-embed", "gemini-generate-cached"} <= set(priced)


@pytest.mark.parametrize("delivery", DELIVERIES)
@pytest.mark.parametrize("case,mode", [pytest.param(c, m, id=f"{c['id']}-{m}")
                                       for c in EXACT for m in sdk.modes(c)])
def test_own_case_is_recorded_exactly(serve_cases, case, mode, delivery):
    base = serve_cases([case], **DELIVERIES[delivery])
    seen = sdk.run(case, base, mode)
    record = only_record()
    expect.check_call(case, mode, base, record)
    if sdk.is_error(case):
        expect.check_error(case, seen, record)
        return
    expect.check_timing(case, record)
    expect.check_reported(case, seen, record)
    expect.check_cost(case, record)
    expect.check_row(record)


@pytest.mark.parametrize("case_id", ["gemini-generate-cached", "gemini-stream-cached"])
def test_gemini_cached_content_is_part_of_input(serve_cases, case_id):
    """promptTokenCount already includes cachedContentTokenCount: input is not the sum of
    the two, and the cached part is priced at the cache-read rate (cheaper than input)."""
    case = load_own(case_id)
    e = case["expected"]
    sdk.run(case, serve_cases([case]), "sync")
    record = only_record()
    assert record.usage.input_tokens == e["input_tokens"] != e["input_tokens"] + e["cached_input_tokens"]
    assert record.usage.cached_input_tokens == e["cached_input_tokens"]
    uncached = dict(expect.inclusive(case), cached_input_tokens=0)
    assert record.cost_usd < expect.genai_cost(e["model"], "google", uncached)


@pytest.mark.parametrize("mode", ["sync", "async", "async-aiohttp"])
def test_gemini_embeddings_without_usage_are_estimated(serve_cases, mode):
    """A batchEmbedContents answer without usageMetadata: one record, the input counted
    locally from the texts sent (all of them, and nothing else), no output."""
    case = load_own("gemini-batch-embed")
    assert "usageMetadata" not in case["response"]["body"]
    seen = sdk.run(case, serve_cases([case]), mode)
    record = only_record()
    assert seen.kind == "response" and len(seen.value["embeddings"]) == 2
    assert (record.provider, record.api, record.model) == ("google", "embed_content", case["expected"]["model"])
    assert record.status == "ok" and record.estimated is True
    assert record.estimate_method.startswith("tiktoken:")
    enc = tiktoken.get_encoding("o200k_base")
    texts = [r["content"]["parts"][0]["text"] for r in case["request"]["body"]["requests"]]
    assert record.usage.input_tokens == sum(len(enc.encode(t)) for t in texts)
    assert record.usage.output_tokens == 0
