"""Cohere's own API, beyond what every own case checks (tests/test_own_cases.py): which
paths are Cohere's, which hosts are, that the billed counts are the ones recorded (and
``tokens`` only without them), and that a stream without counts is estimated."""
from __future__ import annotations

import copy
import json

import pytest
import tiktoken

from tokmagic.protocols import cohere, gemini, ollama, openai, provider_for, recognise

from . import sdk
from .conftest import load_own
from .expect import only_record

@pytest.mark.parametrize("path,protocol", [
    ("/v2/chat", cohere.CHAT), ("/v1/chat", cohere.CHAT), ("/v2/embed", cohere.EMBED), ("/v1/embed", cohere.EMBED),
    # the endings nearby stay what they were
    ("/v1/chat/completions", openai.CHAT), ("/compatibility/v1/chat/completions", openai.CHAT),
    ("/api/chat", ollama.CHAT), ("/api/embed", ollama.EMBED), ("/v1/embeddings", openai.EMBEDDINGS),
    ("/v1beta/models/gemini-embedding-001:batchEmbedContents", gemini.EMBED),
    ("/v1beta/models/gemini-embedding-001:embedContent", gemini.EMBED),
])
def test_recognised_by_path(path, protocol):
    assert recognise("POST", path) is protocol
    assert recognise("GET", path) is None


@pytest.mark.parametrize("path", ["/v2/chats", "/v2/chat/history", "/v2/rerank", "/v2/embed-jobs", "/v1/tokenize"])
def test_other_cohere_endpoints_are_not_read(path):
    assert recognise("POST", path) is None


@pytest.mark.parametrize("host,path,protocol", [
    ("api.cohere.com", "/v2/chat", cohere.CHAT), ("api.cohere.ai", "/v1/embed", cohere.EMBED),
    ("cohere.internal.example:8080", "/v2/chat", cohere.CHAT),  # an unknown host speaking Cohere's API
    ("api.cohere.ai", "/compatibility/v1/chat/completions", openai.CHAT),  # Cohere's OpenAI-compatible API
])
def test_cohere_hosts_are_cohere(host, path, protocol):
    assert provider_for(host, path, protocol) == "cohere"


def _usage_of(case: dict) -> dict:
    """The usage object the case's response carries (v2 whole or message-end, v1 meta)."""
    if case["response"]["sse"]:
        end = [json.loads(line[6:]) for line in case["response"]["sse"].splitlines() if "message-end" in line
               and line.startswith("data: ")]
        return end[-1]["delta"]["usage"]
    body = case["response"]["body"]
    return body.get("usage") or body["meta"]


@pytest.mark.parametrize("case_id", ["cohere-v2-chat", "cohere-v2-chat-stream", "cohere-v1-chat"])
def test_billed_units_are_recorded_not_tokens(serve_cases, case_id):
    """The billed counts are recorded; ``tokens``, which count Cohere's prompt template
    too, would overstate the input (by hundreds of tokens for a one-line question)."""
    case = load_own(case_id)
    usage = _usage_of(case)
    assert usage["tokens"]["input_tokens"] > usage["billed_units"]["input_tokens"]
    sdk.run(case, serve_cases([case]), "sync")
    r = only_record()
    assert (r.usage.input_tokens, r.usage.output_tokens) == (usage["billed_units"]["input_tokens"],
                                                             usage["billed_units"]["output_tokens"])
    assert r.model == case["request"]["body"]["model"]  # Cohere's answers name no model


def _edit_usage(case: dict, edit) -> dict:
    """A copy of the case whose usage object went through ``edit``."""
    case = copy.deepcopy(case)
    if case["response"]["sse"]:
        lines = case["response"]["sse"].split("\n")
        for i, line in enumerate(lines):
            if line.startswith("data: ") and "message-end" in line:
                event = json.loads(line[6:])
                edit(event["delta"])
                lines[i] = "data: " + json.dumps(event)
        case["response"]["sse"] = "\n".join(lines)
    else:
        edit(case["response"]["body"])
    return case


@pytest.mark.parametrize("case_id", ["cohere-v2-chat", "cohere-v2-chat-stream"])
def test_tokens_are_read_when_nothing_is_billed(serve_cases, case_id):
    """A response without ``billed_units`` still reports ``tokens``: those are recorded,
    as reported, rather than estimated."""
    original = load_own(case_id)
    tokens = _usage_of(original)["tokens"]
    case = _edit_usage(original, lambda holder: holder["usage"].pop("billed_units"))
    sdk.run(case, serve_cases([case]), "async")
    r = only_record()
    assert r.estimated is False
    assert (r.usage.input_tokens, r.usage.output_tokens) == (tokens["input_tokens"], tokens["output_tokens"])


def _streamed_output(events: list[dict]) -> str:
    """What a stream generated, as user code received it: text, tool plan, tool calls."""
    out = []
    for event in events:
        message = (event.get("delta") or {}).get("message") or {}
        if isinstance(message.get("content"), dict):
            out.append(message["content"].get("text") or "")
        out.append(message.get("tool_plan") or "")
        if isinstance(message.get("tool_calls"), dict):
            fn = message["tool_calls"].get("function") or {}
            out.append((fn.get("name") or "") + (fn.get("arguments") or ""))
    return "".join(out)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("case_id", ["cohere-v2-chat-stream", "cohere-v2-chat-stream-tools"])
def test_stream_without_usage_is_estimated(serve_cases, case_id, mode):
    """A message-end without usage: counted locally from what was sent (messages and tool
    definitions) and what streamed (text, tool plan, tool calls), flagged as an estimate,
    never 0 / 0 as if exact."""
    case = _edit_usage(load_own(case_id), lambda delta: delta.pop("usage"))
    seen = sdk.run(case, serve_cases([case]), mode)
    r = only_record()
    assert r.status == "ok" and r.estimated is True and r.estimate_method.startswith("tiktoken:")
    assert r.model == case["request"]["body"]["model"]
    enc = tiktoken.get_encoding("o200k_base")
    generated = _streamed_output(seen.value)
    assert generated and r.usage.output_tokens == len(enc.encode(generated))
    body = case["request"]["body"]
    sent = len(enc.encode(body["messages"][0]["content"]))
    if body.get("tools"):
        sent += len(enc.encode(json.dumps(body["tools"])))
    assert r.usage.input_tokens == sent
    # roughly what Cohere billed for the same exchange
    billed = _usage_of(load_own(case_id))["billed_units"]
    assert 0.5 * billed["output_tokens"] <= r.usage.output_tokens <= 1.5 * billed["output_tokens"]
