"""Amazon Bedrock through the real boto3 client (botocore sends through urllib3), against a
local stand-in server (tests/bedrock_server.py).

The replies below are written for tokmagic's tests, NOT recordings of Bedrock: their
shapes follow botocore's service model (bedrock-runtime 2023-09-30) and Anthropic's
Messages format, and their numbers are made up. Each call must leave one record with
the reported usage in the inclusive convention, priced as genai-prices prices it under
provider 'aws', and boto3 must return the same with and without tokmagic."""
from __future__ import annotations

import json
import math
import random
from urllib.parse import quote

import anthropic
import boto3
import botocore.exceptions
import genai_prices
import pytest

import tokmagic
import tokmagic.warn
from tokmagic.monitor import session
from tokmagic.protocols import bedrock, recognise
from tokmagic.protocols.eventstream import EventStreamReader
from tokmagic.providers import provider_for
from tokmagic.records import Usage
from tokmagic.warn import TokmagicWarning

from .bedrock_server import (EVENTSTREAM, BedrockServer, Reply, chunk, event, exception, frame,
                             json_reply, message, stream_reply, string_headers)

SONNET_US = "us.anthropic.claude-3-5-sonnet-20240620-v1:0"
SONNET_EU = "eu.anthropic.claude-3-5-sonnet-20240620-v1:0"
SONNET_ARN = ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
              "apac.anthropic.claude-3-5-sonnet-20240620-v1:0")
SONNET_45_GLOBAL = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
LLAMA = "meta.llama3-8b-instruct-v1:0"
UNKNOWN = "acme.mystery-model-v1:0"

MESSAGES = [{"role": "user", "content": [{"text": "Name three colours."}]}]
ANTHROPIC_BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
                  "messages": [{"role": "user", "content": "Name three colours."}]}


def path(model: str, operation: str) -> str:
    return f"/model/{quote(model, safe='')}/{operation}"


# -- the user code: what each call returned, in comparable form ------------------------

def converse(client, model):
    return client.converse(modelId=model, messages=MESSAGES)


def converse_stream(client, model):
    response = client.converse_stream(modelId=model, messages=MESSAGES)
    return {**response, "stream": list(response["stream"])}


def invoke_model(client, model):
    response = client.invoke_model(modelId=model, body=json.dumps(ANTHROPIC_BODY))
    return {**response, "body": response["body"].read()}


def invoke_model_with_response_stream(client, model):
    response = client.invoke_model_with_response_stream(modelId=model, body=json.dumps(ANTHROPIC_BODY))
    return {**response, "body": list(response["body"])}


OPERATIONS = {converse: "converse", converse_stream: "converse-stream", invoke_model: "invoke",
              invoke_model_with_response_stream: "invoke-with-response-stream"}


def converse_body(usage: dict) -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": "Red, green, blue."}]}},
            "stopReason": "end_turn", "usage": usage, "metrics": {"latencyMs": 412}}


def converse_events(usage: dict | None) -> list[bytes]:
    frames = [event("messageStart", {"role": "assistant"}),
              event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Red, green"}}),
              event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": ", blue."}}),
              event("contentBlockStop", {"contentBlockIndex": 0}),
              event("contentBlockStart", {"contentBlockIndex": 1,
                                          "start": {"toolUse": {"toolUseId": "t1", "name": "paint"}}}),
              event("contentBlockDelta", {"contentBlockIndex": 1,
                                          "delta": {"toolUse": {"input": "{\"colour\": \"red\"}"}}}),
              event("contentBlockStop", {"contentBlockIndex": 1}),
              event("messageStop", {"stopReason": "tool_use"})]
    if usage is not None:
        frames.append(event("metadata", {"usage": usage, "metrics": {"latencyMs": 388}}))
    return frames


def anthropic_message(usage: dict) -> dict:
    return {"id": "msg_bdrk_01", "type": "message", "role": "assistant", "model": "claude-3-haiku-20240307",
            "content": [{"type": "text", "text": "Red, green, blue."}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": usage}


def anthropic_chunks(start_usage: dict, output_tokens: int, metrics: dict) -> list[bytes]:
    return [chunk({"type": "message_start", "message": {
                "id": "msg_bdrk_02", "type": "message", "role": "assistant",
                "model": "claude-3-5-sonnet-20240620", "content": [], "stop_reason": None,
                "stop_sequence": None, "usage": start_usage}}),
            chunk({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            chunk({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": "Red, "}}),
            chunk({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": "green, blue."}}),
            chunk({"type": "content_block_stop", "index": 0}),
            chunk({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                   "usage": {"output_tokens": output_tokens}}),
            chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics})]


def llama_chunks() -> list[bytes]:
    """A model whose native events tokmagic does not read: only Bedrock's metrics count."""
    return [chunk({"generation": "Red,", "prompt_token_count": 18, "generation_token_count": 2,
                   "stop_reason": None}),
            chunk({"generation": " green, blue.", "prompt_token_count": None, "generation_token_count": 6,
                   "stop_reason": "stop", "amazon-bedrock-invocationMetrics": {
                       "inputTokenCount": 18, "outputTokenCount": 6, "invocationLatency": 301,
                       "firstByteLatency": 95}})]


#: (user code, model id, the reply, the usage tokmagic must record)
CASES = {
    "converse-cache": (converse, SONNET_US, json_reply(converse_body(
        {"inputTokens": 120, "outputTokens": 30, "totalTokens": 1350,
         "cacheReadInputTokens": 1000, "cacheWriteInputTokens": 200})),
        Usage(input_tokens=1320, cached_input_tokens=1000, cache_write_tokens=200, output_tokens=30)),
    "converse-arn": (converse, SONNET_ARN, json_reply(converse_body(
        {"inputTokens": 11, "outputTokens": 5, "totalTokens": 16})),
        Usage(input_tokens=11, output_tokens=5)),
    "converse-stream-cache-write": (converse_stream, SONNET_45_GLOBAL, stream_reply(*converse_events(
        {"inputTokens": 25, "outputTokens": 12, "totalTokens": 2085, "cacheReadInputTokens": 0,
         "cacheWriteInputTokens": 2048})),
        Usage(input_tokens=2073, cache_write_tokens=2048, output_tokens=12)),
    "invoke-anthropic": (invoke_model, HAIKU, json_reply(anthropic_message(
        {"input_tokens": 50, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 300,
         "output_tokens": 20})),
        Usage(input_tokens=350, cached_input_tokens=300, output_tokens=20)),
    "invoke-stream-anthropic": (invoke_model_with_response_stream, SONNET_EU, stream_reply(*anthropic_chunks(
        {"input_tokens": 40, "cache_creation_input_tokens": 500, "cache_read_input_tokens": 0,
         "output_tokens": 1}, 15,
        {"inputTokenCount": 40, "outputTokenCount": 15, "invocationLatency": 812, "firstByteLatency": 230})),
        Usage(input_tokens=540, cache_write_tokens=500, output_tokens=15)),
    "invoke-stream-llama-metrics": (invoke_model_with_response_stream, LLAMA, stream_reply(*llama_chunks()),
                                    Usage(input_tokens=18, output_tokens=6)),
    # a model's own body tokmagic does not read: Bedrock's count headers are the usage
    "invoke-llama-headers": (invoke_model, LLAMA, json_reply(
        {"generation": "Red, green, blue.", "prompt_token_count": 18, "generation_token_count": 6,
         "stop_reason": "stop"},
        **{"X-Amzn-Bedrock-Input-Token-Count": "18", "X-Amzn-Bedrock-Output-Token-Count": "6",
           "X-Amzn-Bedrock-Invocation-Latency": "301"}),
        Usage(input_tokens=18, output_tokens=6)),
}


def client_for(base: str):
    return boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=base,
                        aws_access_key_id="x", aws_secret_access_key="x")


def aws_price(model: str, u: Usage) -> float:
    return float(genai_prices.calc_price(
        genai_prices.Usage(input_tokens=u.input_tokens, cache_read_tokens=u.cached_input_tokens,
                           cache_write_tokens=u.cache_write_tokens, output_tokens=u.output_tokens),
        model, provider_id="aws").total_price)


@pytest.mark.parametrize("split_seed", [None, 7], ids=["whole", "split"])
@pytest.mark.parametrize("case_id", CASES)
def test_one_record_per_call_priced_as_genai_prices_and_the_user_sees_the_same(case_id, split_seed):
    call, model, reply, usage = CASES[case_id]
    with BedrockServer({path(model, OPERATIONS[call]): [reply]}, split_seed) as server:
        client = client_for(server.base)
        seen = call(client, model)
        (record,) = session.records()
        tokmagic.uninstall()
        try:
            plain = call(client, model)
        finally:
            tokmagic.install()
    api = "converse" if call in (converse, converse_stream) else "invoke_model"
    assert (record.provider, record.api, record.model) == ("bedrock", api, model)
    assert record.stream is (reply.content_type == EVENTSTREAM)
    assert (record.status, record.http_status, record.error) == ("ok", 200, None)
    assert record.usage == usage and not record.estimated
    assert record.cost_usd == pytest.approx(aws_price(model, usage), rel=1e-12, abs=0) and record.cost_usd > 0
    if record.stream:
        assert 0 < record.ttft_s <= record.latency_s
    assert len(session.records()) == 1  # nothing recorded while uninstalled
    assert seen == plain


def test_an_unknown_model_costs_nan_with_a_warning(monkeypatch):
    monkeypatch.setattr(tokmagic.warn, "_seen", set())
    reply = json_reply(converse_body({"inputTokens": 9, "outputTokens": 4, "totalTokens": 13}))
    with BedrockServer({path(UNKNOWN, "converse"): [reply]}) as server:
        converse(client_for(server.base), UNKNOWN)
    with pytest.warns(TokmagicWarning, match=UNKNOWN):
        (record,) = session.records()
    assert record.model == UNKNOWN and record.usage == Usage(input_tokens=9, output_tokens=4)
    assert math.isnan(record.cost_usd)


def aws_error(code: str, message: str, status: int) -> Reply:
    return json_reply({"message": message}, status,
                      **{"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"})


THROTTLED = aws_error("ThrottlingException", "Too many requests, please wait before trying again.", 429)


@pytest.mark.parametrize("case_id", ["converse-cache", "invoke-stream-anthropic"])
def test_a_retry_after_throttling_is_two_rows_of_one_call(case_id):
    call, model, reply, usage = CASES[case_id]
    with BedrockServer({path(model, OPERATIONS[call]): [THROTTLED, reply]}) as server:
        seen = call(client_for(server.base), model)
        sent = [headers.get("amz-sdk-request") for _, headers in server.requests]
    assert seen["ResponseMetadata"]["RetryAttempts"] == 1
    assert [s.rpartition("attempt=")[2][:1] for s in sent] == ["1", "2"]  # what botocore sent
    first, second = session.records()
    assert (first.status, first.http_status, first.cost_usd) == ("error", 429, 0.0)
    assert (second.status, second.usage) == ("ok", usage)
    assert first.call_id == second.call_id and (first.attempt, second.attempt) == (1, 2)


def test_an_exception_inside_the_stream_is_an_interrupted_record():
    frames = converse_events(None)[:3] + [exception("modelStreamErrorException", "The model stopped.")]
    with BedrockServer({path(SONNET_US, "converse-stream"): [stream_reply(*frames)]}, 3) as server:
        with pytest.raises(botocore.exceptions.EventStreamError, match="modelStreamErrorException"):
            converse_stream(client_for(server.base), SONNET_US)
    (record,) = session.records()
    assert record.status == "interrupted" and "The model stopped." in record.error
    assert record.estimated and record.usage.input_tokens > 0 and record.usage.output_tokens > 0


def test_a_stream_cut_inside_a_frame_is_interrupted_and_estimated():
    body = b"".join(converse_events({"inputTokens": 25, "outputTokens": 12, "totalTokens": 37}))
    cut = Reply(body=body[:-20], content_type=EVENTSTREAM)
    with BedrockServer({path(SONNET_US, "converse-stream"): [cut]}) as server:
        events = converse_stream(client_for(server.base), SONNET_US)["stream"]
    assert "metadata" not in events[-1]  # botocore ends quietly on a partial frame
    (record,) = session.records()
    assert (record.status, record.error) == ("interrupted", "IncompleteStream")
    assert record.estimated and record.usage.output_tokens > 0


def test_an_error_reply_is_an_error_record():
    reply = aws_error("ValidationException", "The provided model identifier is invalid.", 400)
    with BedrockServer({path(HAIKU, "invoke-with-response-stream"): [reply]}) as server:
        with pytest.raises(botocore.exceptions.ClientError, match="ValidationException"):
            invoke_model_with_response_stream(client_for(server.base), HAIKU)
    (record,) = session.records()
    assert (record.status, record.http_status, record.model, record.cost_usd) == ("error", 400, HAIKU, 0.0)


def test_the_anthropic_sdks_bedrock_client_over_httpx_is_read_the_same():
    """AnthropicBedrock posts to the same paths through httpx, ":" left unencoded."""
    _, model, reply, usage = CASES["invoke-anthropic"]
    _, stream_model, stream, stream_usage = CASES["invoke-stream-anthropic"]
    replies = {path(model, "invoke"): [reply], path(stream_model, "invoke-with-response-stream"): [stream]}
    with BedrockServer(replies, split_seed=7) as server:
        client = anthropic.AnthropicBedrock(aws_access_key="x", aws_secret_key="x", aws_region="us-east-1",
                                            base_url=server.base, max_retries=0)
        ask = {"max_tokens": 100, "messages": [{"role": "user", "content": "Name three colours."}]}
        client.messages.create(model=model, **ask)
        with client.messages.stream(model=stream_model, **ask) as events:
            events.get_final_message()
    whole, streamed = session.records()
    assert (whole.model, whole.stream, whole.status, whole.usage) == (model, False, "ok", usage)
    assert (streamed.model, streamed.stream, streamed.status, streamed.usage) == (
        stream_model, True, "ok", stream_usage)
    assert whole.provider == streamed.provider == "bedrock"


# -- the event stream reader ------------------------------------------------------

def _read(pieces) -> list[tuple[str | None, str]]:
    got: list[tuple[str | None, str]] = []
    reader = EventStreamReader(lambda name, data: got.append((name, data)))
    for piece in pieces:
        reader.feed(piece)
    assert reader.close() is False
    return got


def test_frames_cut_at_every_byte_read_the_same():
    stream = b"".join(converse_events({"inputTokens": 1, "outputTokens": 2, "totalTokens": 3}))
    whole = _read([stream])
    assert [name for name, _ in whole][-1] == "metadata" and len(whole) == 9
    for cut in range(len(stream) + 1):
        assert _read([stream[:cut], stream[cut:]]) == whole
    assert _read([stream[i:i + 1] for i in range(len(stream))]) == whole
    rng = random.Random(5)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(stream)), 12))
        assert _read([stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]) == whole


def _header(name: str, kind: int, value: bytes) -> bytes:
    return bytes([len(name)]) + name.encode() + bytes([kind]) + value


def test_headers_of_every_type_are_skipped_and_non_events_are_named():
    other_types = (_header("flag", 0, b"") + _header("off", 1, b"") + _header("b", 2, b"\x01")
                   + _header("s", 3, b"\x00\x02") + _header("i", 4, b"\x00\x00\x00\x03")
                   + _header("l", 5, bytes(8)) + _header("raw", 6, b"\x00\x03abc")
                   + _header("t", 8, bytes(8)) + _header("id", 9, bytes(16)))
    typed = message(other_types + string_headers({":message-type": "event", ":event-type": "metadata"}), b"{}")
    error = frame({":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}, b"")
    got = _read([typed, exception("throttlingException", "slow"), error])
    assert got == [("metadata", "{}"), ("exception:throttlingException", '{"message": "slow"}'),
                   ("error:InternalFailure", "boom")]


def test_a_corrupt_frame_stops_the_reader_and_a_cut_one_is_reported():
    stream = bytearray(event("metadata", {"usage": {}}))
    reader = EventStreamReader(lambda name, data: None)
    reader.feed(bytes(stream[:-3]))
    assert reader.close() is True
    stream[20] ^= 0xFF
    with pytest.raises(ValueError, match="checksum"):
        EventStreamReader(lambda name, data: None).feed(bytes(stream))
    stream[20] ^= 0xFF
    stream[2] ^= 0x01  # the total length: the prelude's checksum catches it
    with pytest.raises(ValueError, match="prelude"):
        EventStreamReader(lambda name, data: None).feed(bytes(stream))


# -- recognition and provider -------------------------------------------------------

def test_only_bedrock_model_paths_are_bedrock():
    assert recognise("POST", path(SONNET_US, "converse")) is bedrock.CONVERSE
    assert recognise("POST", path(SONNET_US, "converse-stream")) is bedrock.CONVERSE
    assert recognise("POST", path(HAIKU, "invoke")) is bedrock.INVOKE
    assert recognise("POST", path(HAIKU, "invoke-with-response-stream")) is bedrock.INVOKE
    assert recognise("POST", "/my_chain/invoke") is None  # a LangServe chain
    assert recognise("POST", "/api/converse") is None
    assert bedrock.INVOKE.path_model(path(SONNET_ARN, "invoke")) == SONNET_ARN


@pytest.mark.parametrize("host", ["bedrock-runtime.us-east-1.amazonaws.com",
                                  "bedrock-runtime-fips.us-west-2.amazonaws.com",
                                  "vpce-0abc-1xyz.bedrock-runtime.eu-west-1.vpce.amazonaws.com"])
def test_bedrock_hosts_are_bedrock_whatever_the_format(host):
    assert provider_for(host, path(HAIKU, "converse"), "bedrock") == "bedrock"
    assert provider_for(host, "/openai/v1/chat/completions", "openai") == "bedrock"
