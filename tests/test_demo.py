"""The demo endpoint speaks the wire formats well enough for the real openai and
anthropic SDKs, sync and streaming, and tokmagic records each call with exactly the
usage that responses.json reports."""
from __future__ import annotations

import base64
import socket
import struct
import time

import pytest
import tiktoken

import tokmagic
import tokmagic.demo

from . import demo_replies
from .demo_replies import USAGE_FIELDS

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

CHAT = "gpt-4o-mini"
CLAUDE = "claude-haiku-4-5-20251001"
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def base():
    """One endpoint for the module (stopping one takes half a second), started fresh so
    its replies come in the order ``turns`` expects."""
    tokmagic.demo.stop()
    yield tokmagic.demo.start()
    tokmagic.demo.stop()


@pytest.fixture(scope="module")
def turns(base):
    """The replies the endpoint hands out, in step with it: each test takes one per call."""
    return demo_replies.Turns(demo_replies.load())


@pytest.fixture
def oa(base):
    return openai.OpenAI(base_url=base + "/v1", api_key="demo", max_retries=0)


@pytest.fixture
def an(base):
    return anthropic.Anthropic(base_url=base, api_key="demo", max_retries=0)


def recorded(n: int) -> list[dict]:
    rows = tokmagic.usage().to_dict("records")
    assert len(rows) == n
    return rows


def usage_of(row: dict) -> dict[str, int]:
    return {name: row[name] for name in USAGE_FIELDS}


def test_start_once_per_process(base):
    assert tokmagic.demo.start() == base
    assert base.startswith("http://127.0.0.1:")


def test_openai_chat_rotates_and_is_recorded(oa, turns):
    replies = [turns.next("openai_chat") for _ in range(4)]
    texts = [oa.chat.completions.create(model=CHAT, messages=HELLO).choices[0].message.content
             for _ in replies]
    assert texts == [demo_replies.text("openai_chat", r) for r in replies]
    assert len(set(texts)) > 1
    rows = recorded(4)
    for row, reply in zip(rows, replies):
        assert (row["provider"], row["api"], row["model"], row["status"]) == ("openai", "chat", reply["model"], "ok")
        assert usage_of(row) == demo_replies.reported("openai_chat", reply)
        assert not row["estimated"] and row["cost_usd"] > 0
    assert any(row["cached_input_tokens"] for row in rows)


def test_openai_stream_with_usage(oa, turns):
    reply = turns.next("openai_chat_stream")
    chunks = list(oa.chat.completions.create(model=CHAT, messages=HELLO, stream=True,
                                             stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        demo_replies.text("openai_chat_stream", reply)
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens > 0
    [row] = recorded(1)
    assert row["stream"] and not row["estimated"]
    assert usage_of(row) == demo_replies.reported("openai_chat_stream", reply)


def test_openai_stream_without_usage_is_estimated(oa, turns):
    reply = turns.next("openai_chat_stream_no_usage")
    assert demo_replies.reported("openai_chat_stream_no_usage", reply) is None
    chunks = list(oa.chat.completions.create(model=CHAT, messages=HELLO, stream=True))
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == demo_replies.text("openai_chat_stream_no_usage", reply)
    [row] = recorded(1)
    assert row["estimated"] and row["estimate_method"] == "tiktoken:o200k_base"
    assert row["output_tokens"] == len(tiktoken.get_encoding("o200k_base").encode(text))
    assert row["input_tokens"] > 0


@pytest.mark.parametrize("encoding_format", [None, "float"])
def test_openai_embeddings(oa, turns, encoding_format):
    reply = turns.next("openai_embeddings")
    options = {"encoding_format": encoding_format} if encoding_format else {}
    result = oa.embeddings.create(model="text-embedding-3-small", input=["a", "b", "c", "d"], **options)
    stored = [item["embedding"] for item in reply["data"]]
    assert [item.index for item in result.data] == [0, 1, 2, 3]
    for item in result.data:
        assert item.embedding == pytest.approx(stored[item.index % len(stored)], abs=1e-6)
    [row] = recorded(1)
    assert row["api"] == "embeddings" and row["model"] == "text-embedding-3-small"
    assert usage_of(row) == demo_replies.reported("openai_embeddings", reply)


def test_anthropic_messages_and_stream(an, turns):
    first, second = turns.next("anthropic_messages"), turns.next("anthropic_messages")
    streamed = turns.next("anthropic_messages_stream")
    texts = [an.messages.create(model=CLAUDE, max_tokens=100, messages=HELLO).content[0].text
             for _ in range(2)]
    assert texts == [demo_replies.text("anthropic_messages", r) for r in (first, second)]
    with an.messages.stream(model=CLAUDE, max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == demo_replies.text("anthropic_messages_stream", streamed)
    expected = demo_replies.reported("anthropic_messages_stream", streamed)
    assert final.usage.output_tokens == expected["output_tokens"]
    rows = recorded(3)
    for row, (kind, reply) in zip(rows, [("anthropic_messages", first), ("anthropic_messages", second),
                                         ("anthropic_messages_stream", streamed)]):
        assert (row["provider"], row["api"], row["model"]) == ("anthropic", "messages", CLAUDE)
        assert usage_of(row) == demo_replies.reported(kind, reply)
        assert not row["estimated"] and row["cost_usd"] > 0
    assert rows[2]["stream"]


def test_unknown_endpoint_is_an_error_and_nothing_goes_to_stderr(oa, turns, capfd):
    with pytest.raises(openai.NotFoundError):
        oa.completions.create(model="gpt-3.5-turbo-instruct", prompt="Hi")
    [row] = recorded(1)
    assert row["status"] == "error" and row["http_status"] == 404
    oa.chat.completions.create(model=CHAT, messages=HELLO)
    turns.next("openai_chat")
    assert capfd.readouterr().err == ""


def _chunks(sock: socket.socket) -> list[bytes]:
    """The HTTP chunks of one chunked response, read off a raw socket."""
    reader = sock.makefile("rb")
    while reader.readline() not in (b"\r\n", b""):
        pass  # status line and headers
    chunks = []
    while (size := int(reader.readline().strip(), 16)) > 0:
        chunks.append(reader.read(size))
        reader.readline()
    reader.readline()
    return chunks


def test_one_sse_event_per_chunk_on_a_kept_alive_connection(base, turns):
    body = b'{"model": "claude-haiku-4-5-20251001", "max_tokens": 9, "stream": true, "messages": []}'
    request = (b"POST /v1/messages HTTP/1.1\r\nHost: demo\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for _ in range(2):  # the second request reuses the connection
            sock.sendall(request)
            chunks = _chunks(sock)
            events = turns.next("anthropic_messages_stream")
            assert len(chunks) == len(events)
            assert all(c.startswith(b"event: ") and c.endswith(b"\n\n") and c.count(b"\n\n") == 1
                       for c in chunks)


def test_event_delay_paces_a_stream(oa, turns):
    events = len(turns.next("openai_chat_stream"))
    tokmagic.demo.start(event_delay_ms=10)
    try:
        began = time.perf_counter()
        list(oa.chat.completions.create(model=CHAT, messages=HELLO, stream=True,
                                        stream_options={"include_usage": True}))
        assert time.perf_counter() - began >= (events - 1) * 0.010
    finally:
        tokmagic.demo.start(event_delay_ms=0)


def test_event_delay_paces_a_whole_reply_as_if_streamed(oa, turns):
    from tokmagic.demo.server import TOKENS_PER_EVENT

    tokens = turns.next("openai_chat")["usage"]["completion_tokens"]
    tokmagic.demo.start(event_delay_ms=10)
    try:
        began = time.perf_counter()
        oa.chat.completions.create(model=CHAT, messages=HELLO)
        assert time.perf_counter() - began >= 0.010 * tokens / TOKENS_PER_EVENT > 0.02
    finally:
        tokmagic.demo.start(event_delay_ms=0)


def test_base64_embeddings_are_little_endian_float32(base, turns):
    """The format the openai SDK asks for by default, checked without the SDK."""
    import json
    import urllib.request

    request = urllib.request.Request(base + "/v1/embeddings", method="POST", data=json.dumps(
        {"model": "text-embedding-3-small", "input": "a", "encoding_format": "base64"}).encode())
    with urllib.request.urlopen(request) as response:
        packed = json.load(response)["data"][0]["embedding"]
    raw = base64.b64decode(packed)
    stored = turns.next("openai_embeddings")["data"][0]["embedding"]
    assert struct.unpack(f"<{len(raw) // 4}f", raw) == pytest.approx(stored, abs=1e-6)
