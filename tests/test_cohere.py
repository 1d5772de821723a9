"""Cohere's own API, beyond what every own case checks (tests/test_own_cases.py): which
paths are Cohere's, which hosts are, that the billed counts are the ones recorded (and
``tokens`` only without them), that a stream without counts is estimated, and how a v1
stream (one JSON object a line, not SSE) is read."""
from __future__ import annotations

import copy
import json

import pytest
import tiktoken

from tokmagic.protocols import cohere, gemini, ollama, openai, provider_for, recognise
from tokmagic.protocols.sse import NDJSONReader

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


def _events(case: dict) -> list[dict]:
    """A streamed case's events: v2's SSE data lines, or v1's lines."""
    lines = case["response"]["sse"].splitlines()
    if case["response"]["stream_format"] == "ndjson":
        return [json.loads(line) for line in lines if line.strip()]
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def _holds_usage(event: dict) -> dict | None:
    """Where a stream event keeps the counts: v2 message-end's delta (``usage``), v1
    stream-end's response (``meta``)."""
    if event.get("type") == "message-end":
        return event["delta"]
    if event.get("event_type") == "stream-end":
        return event["response"]
    return None


def _usage_of(case: dict) -> dict:
    """The usage object the case's response carries (v2 whole or message-end, v1 meta,
    whole or in stream-end)."""
    if case["response"]["sse"]:
        holder = [h for h in map(_holds_usage, _events(case)) if h][-1]
    else:
        holder = case["response"]["body"]
    return holder.get("usage") or holder["meta"]


@pytest.mark.parametrize("case_id", ["cohere-v2-chat", "cohere-v2-chat-stream", "cohere-v1-chat", "cohere-v1-chat-stream"])
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
    """A copy of the case whose usage object went through ``edit`` (which returns None to
    drop it)."""
    case = copy.deepcopy(case)

    def change(holder: dict) -> None:
        key = "usage" if "usage" in holder else "meta"
        holder[key] = edit(holder[key])
        if holder[key] is None:
            del holder[key]

    if case["response"]["sse"]:
        prefix = "" if case["response"]["stream_format"] == "ndjson" else "data: "
        lines = case["response"]["sse"].split("\n")
        for i, line in enumerate(lines):
            if line.startswith(prefix + "{"):
                event = json.loads(line[len(prefix):])
                if _holds_usage(event):
                    change(_holds_usage(event))
                    lines[i] = prefix + json.dumps(event)
        case["response"]["sse"] = "\n".join(lines)
    else:
        change(case["response"]["body"])
    return case


def _without(key: str):
    def edit(usage: dict) -> dict:
        return {k: v for k, v in usage.items() if k != key}
    return edit


@pytest.mark.parametrize("case_id", ["cohere-v2-chat", "cohere-v2-chat-stream", "cohere-v1-chat", "cohere-v1-chat-stream"])
def test_tokens_are_read_when_nothing_is_billed(serve_cases, case_id):
    """A response without ``billed_units`` still reports ``tokens``: those are recorded,
    as reported, rather than estimated."""
    original = load_own(case_id)
    tokens = _usage_of(original)["tokens"]
    case = _edit_usage(original, _without("billed_units"))
    assert "billed_units" not in _usage_of(case)
    sdk.run(case, serve_cases([case]), "async")
    r = only_record()
    assert r.estimated is False
    assert (r.usage.input_tokens, r.usage.output_tokens) == (tokens["input_tokens"], tokens["output_tokens"])


def _streamed_output(events: list[dict]) -> str:
    """What a stream generated, as user code received it: text, tool plan, tool calls
    (v1: the text-generation pieces)."""
    out = []
    for event in events:
        if event.get("event_type") == "text-generation":
            out.append(event["text"])
        message = (event.get("delta") or {}).get("message") or {}
        if isinstance(message.get("content"), dict):
            out.append(message["content"].get("text") or "")
        out.append(message.get("tool_plan") or "")
        if isinstance(message.get("tool_calls"), dict):
            fn = message["tool_calls"].get("function") or {}
            out.append((fn.get("name") or "") + (fn.get("arguments") or ""))
    return "".join(out)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("case_id", ["cohere-v2-chat-stream", "cohere-v2-chat-stream-tools", "cohere-v1-chat-stream"])
def test_stream_without_usage_is_estimated(serve_cases, case_id, mode):
    """A message-end (v1: stream-end) without usage: counted locally from what was sent
    (messages and tool definitions) and what streamed (text, tool plan, tool calls),
    flagged as an estimate, never 0 / 0 as if exact."""
    case = _edit_usage(load_own(case_id), lambda usage: None)
    assert [h for h in map(_holds_usage, _events(case)) if h and ("usage" in h or "meta" in h)] == []
    seen = sdk.run(case, serve_cases([case]), mode)
    r = only_record()
    assert r.status == "ok" and r.estimated is True and r.estimate_method.startswith("tiktoken:")
    assert r.model == case["request"]["body"]["model"]
    enc = tiktoken.get_encoding("o200k_base")
    generated = _streamed_output(seen.value)
    assert generated and r.usage.output_tokens == len(enc.encode(generated))
    body = case["request"]["body"]
    sent = len(enc.encode(body["message"] if "message" in body else body["messages"][0]["content"]))
    if body.get("tools"):
        sent += len(enc.encode(json.dumps(body["tools"])))
    assert r.usage.input_tokens == sent
    # roughly what Cohere billed for the same exchange
    billed = _usage_of(load_own(case_id))["billed_units"]
    assert 0.5 * billed["output_tokens"] <= r.usage.output_tokens <= 1.5 * billed["output_tokens"]


# -- the v1 stream, read as tokmagic's NDJSON framing delivers it ----------------------

def _read_v1(lines: list[dict], cut: int = 7):
    """A v1 stream's reading, its bytes fed in pieces of ``cut`` bytes (lines split anywhere)."""
    reader = cohere.CHAT.stream_reader()
    framing = NDJSONReader(reader.event)
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    for i in range(0, len(body), cut):
        framing.feed(body[i:i + cut])
    framing.close()
    return reader.reading


def test_v1_stream_reader_reads_the_counts_at_stream_end():
    """The recorded v1 stream: billed counts from stream-end's response.meta, complete,
    and the text of the text-generation pieces only (stream-end repeats it whole)."""
    case = load_own("cohere-v1-chat-stream")
    events = _events(case)
    reading = _read_v1(events)
    billed = _usage_of(case)["billed_units"]
    assert (reading.usage.input_tokens, reading.usage.output_tokens) == (billed["input_tokens"],
                                                                         billed["output_tokens"])
    assert reading.complete is True and reading.error is None
    assert "".join(reading.output_text) == _streamed_output(events) == events[-1]["response"]["text"]


def test_v1_stream_cut_before_stream_end_is_incomplete():
    events = _events(load_own("cohere-v1-chat-stream"))
    reading = _read_v1(events[:-1])
    assert reading.usage is None and reading.complete is False
    assert "".join(reading.output_text) == _streamed_output(events)


#: A v1 stream calling a tool, as Cohere sends it: the plan and the call in pieces, then
#: the whole call again in tool-calls-generation.
_V1_TOOL_EVENTS = [
    {"is_finished": False, "event_type": "stream-start", "generation_id": "g-1"},
    *({"is_finished": False, "event_type": "tool-calls-chunk", "text": t} for t in ["I will", " look up", " Toronto."]),
    {"is_finished": False, "event_type": "tool-calls-chunk", "tool_call_delta": {"index": 0, "name": "get_weather"}},
    *({"is_finished": False, "event_type": "tool-calls-chunk", "tool_call_delta": {"index": 0, "parameters": p}}
      for p in ['{"', "city", '": "', "Toronto", '"}']),
    {"is_finished": False, "event_type": "tool-calls-generation", "text": "I will look up Toronto.",
     "tool_calls": [{"name": "get_weather", "parameters": {"city": "Toronto"}}]},
    {"is_finished": True, "event_type": "stream-end", "finish_reason": "COMPLETE",
     "response": {"text": "I will look up Toronto.", "finish_reason": "COMPLETE",
                  "tool_calls": [{"name": "get_weather", "parameters": {"city": "Toronto"}}],
                  "meta": {"billed_units": {"input_tokens": 31, "output_tokens": 19}}}},
]


def test_v1_stream_tool_calls_are_output_counted_once():
    """The plan and the call's name and argument pieces are output; the repeated whole
    call (tool-calls-generation) and the repeated answer (stream-end) add nothing."""
    reading = _read_v1(_V1_TOOL_EVENTS)
    assert (reading.usage.input_tokens, reading.usage.output_tokens) == (31, 19) and reading.complete is True
    assert "".join(reading.output_text) == 'I will look up Toronto.get_weather{"city": "Toronto"}'


def test_v1_stream_whole_tool_calls_count_when_no_pieces_came():
    events = [e for e in _V1_TOOL_EVENTS if e["event_type"] != "tool-calls-chunk"]
    events[-1] = {**events[-1], "response": {"text": ""}}  # no counts either
    reading = _read_v1(events)
    assert "".join(reading.output_text) == "I will look up Toronto." + "get_weather" + json.dumps({"city": "Toronto"})


@pytest.mark.parametrize("finish", ["ERROR", "ERROR_TOXIC", "ERROR_LIMIT"])
def test_v1_stream_ending_in_error_says_so(finish):
    events = _events(load_own("cohere-v1-chat-stream"))
    events[-1] = {**events[-1], "finish_reason": finish}
    reading = _read_v1(events)
    assert reading.error == finish and reading.complete is True
    assert reading.usage is not None  # what was billed is still recorded
