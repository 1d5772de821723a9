"""n > 1: several choices from one Chat Completions call, through the real openai SDK.
One usage block covers them all (completion_tokens is their sum, the prompt is counted
once), and it is recorded as reported. Without usage, the estimate counts the text of
every choice, each kept whole although their streamed chunks interleave."""
from __future__ import annotations

import copy
import json

import pytest
import tiktoken

from tokmagic.protocols import openai

from . import sdk
from .conftest import load_own
from .expect import only_record

#: The replay server's two deliveries: as written, and gzip with streams cut at random bytes.
DELIVERIES = {"plain": {}, "compressed-split": {"compress": True, "split_seed": 11}}
MODES = ["sync", "async"]


def _chunks(case: dict) -> list[dict]:
    return [json.loads(line[6:]) for line in case["response"]["sse"].splitlines() if line.startswith("data: {")]


def _choice_texts(case: dict) -> dict[int, str]:
    """Each choice's streamed text, by index, from the recorded chunks."""
    texts: dict[int, str] = {}
    for chunk in _chunks(case):
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + (choice["delta"].get("content") or "")
    return texts


def _prompt_tokens(enc, messages: list[dict]) -> int:
    """The OpenAI Cookbook's count for plain messages (FACTS.md §2): 3 per message, its
    role and content, and 3 priming the reply. It does not depend on n."""
    return 3 + sum(3 + len(enc.encode(m["role"])) + len(enc.encode(m["content"])) for m in messages)


@pytest.mark.parametrize("mode", MODES)
def test_reported_usage_covers_every_choice(serve_cases, mode):
    case = load_own("openai-chat-n2")
    seen = sdk.run(case, serve_cases([case]), mode)
    r = only_record()
    reported = case["response"]["body"]["usage"]
    assert [c["index"] for c in seen.value["choices"]] == [0, 1]
    assert r.status == "ok" and r.estimated is False and r.estimate_method is None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (
        reported["prompt_tokens"], reported["completion_tokens"], reported["total_tokens"])


@pytest.mark.parametrize("mode", MODES)
def test_whole_answer_without_usage_counts_every_choice(serve_cases, mode):
    case = copy.deepcopy(load_own("openai-chat-n2"))
    case["response"]["body"].pop("usage")
    sdk.run(case, serve_cases([case]), mode)
    r = only_record()
    enc = tiktoken.get_encoding("o200k_base")
    choices = case["response"]["body"]["choices"]
    assert r.estimated is True and r.estimate_method == "tiktoken:o200k_base"
    assert r.usage.output_tokens == len(enc.encode("".join(c["message"]["content"] for c in choices)))
    assert r.usage.input_tokens == _prompt_tokens(enc, case["request"]["body"]["messages"])


@pytest.mark.parametrize("delivery", DELIVERIES)
@pytest.mark.parametrize("mode", MODES)
def test_stream_without_usage_counts_every_choice(serve_cases, mode, delivery):
    """Each chunk carries one choice, named by its index, and the two interleave: the
    output estimate is the count of both choices' texts, each whole, one after the other."""
    case = load_own("openai-chat-n2-stream-no-usage")
    assert "usage" not in case["response"]["sse"]
    seen = sdk.run(case, serve_cases([case], **DELIVERIES[delivery]), mode)
    r = only_record()
    assert r.status == "ok" and r.stream is True and r.model == case["expected"]["model"]
    assert r.estimated is True and r.estimate_method == "tiktoken:o200k_base"
    enc = tiktoken.encoding_for_model(r.model)
    texts = _choice_texts(case)
    assert sorted(texts) == [0, 1] and all(texts.values())
    joined = texts[0] + texts[1]
    assert r.usage.output_tokens == len(enc.encode(joined))
    # user code got both choices' pieces, interleaved; counted in that order they would run
    # into each other and give another count
    arrival = seen.streamed_text()
    assert sorted(arrival) == sorted(joined) and arrival != joined
    assert len(enc.encode(arrival)) != r.usage.output_tokens
    assert r.usage.input_tokens == _prompt_tokens(enc, case["request"]["body"]["messages"])


def _read_stream(chunks: list[dict]):
    reader = openai.CHAT.stream_reader()
    for chunk in chunks:
        reader.event(None, json.dumps(chunk))
    reader.event(None, "[DONE]")
    return reader.reading


def test_stream_reader_keeps_each_choice_whole_in_any_order():
    """Choices may start in any order and one may run ahead: each choice's text stays
    together, in index order."""
    pieces = [(1, "B1"), (0, "A1"), (2, "C1"), (1, "B2"), (0, "A2"), (0, "A3"), (2, "C2"), (1, "B3")]
    reading = _read_stream([{"choices": [{"index": i, "delta": {"content": text}}]} for i, text in pieces])
    assert "".join(reading.output_text) == "A1A2A3" + "B1B2B3" + "C1C2"
    assert reading.complete is True and reading.usage is None


def test_stream_reader_counts_tool_call_arguments_of_every_choice():
    """Tool calls are output too: each choice's call name and argument pieces stay with
    that choice."""
    def call(i, **fn):
        return {"choices": [{"index": i, "delta": {"tool_calls": [{"index": 0, "function": fn}]}}]}
    chunks = [call(0, name="get_weather", arguments=""), call(1, name="get_time", arguments=""),
              call(1, arguments='{"tz": '), call(0, arguments='{"city": '), call(0, arguments='"Oslo"}'),
              call(1, arguments='"CET"}')]
    reading = _read_stream(chunks)
    assert "".join(reading.output_text) == 'get_weather{"city": "Oslo"}' + 'get_time{"tz": "CET"}'
