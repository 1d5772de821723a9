"""Bad input never reaches the user through tokmagic: malformed, non-JSON and odd bodies,
broken and cut streams, compressed bodies, UTF-8 split across reads, requests that are
not LLM calls, and failures inside tokmagic itself. The responses come from an
in-process httpx2.MockTransport (no sockets). For each, user code sees exactly what it
sees without tokmagic, and tokmagic records one row (or none for non-LLM requests)
instead of raising."""
from __future__ import annotations

import asyncio
import gzip
import json
import random
import warnings

import brotli
import httpx
import httpx2
import openai
import pytest
import tiktoken
import zstandard

import tokmagic
from tokmagic.monitor import session
from tokmagic.warn import TokmagicWarning

from .conftest import load_case, replay_server

STREAM_CASE = load_case("openai-chat-stream-include-usage")
WHOLE_CASE = load_case("openai-chat-basic")
EVENTS = replay_server.split_events(STREAM_CASE)
STREAM_BODY = STREAM_CASE["request"]["body"]
WHOLE_BODY = WHOLE_CASE["request"]["body"]


class Pieces(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A response body delivered in the given pieces, then optionally a network error.
    Read once, like a network stream (the async SDK drains a stream a second time)."""

    def __init__(self, pieces: list[bytes], error: Exception | None = None) -> None:
        self._left, self.error = iter(list(pieces)), error

    def __iter__(self):
        yield from self._left
        if self.error:
            error, self.error = self.error, None
            raise error

    async def __aiter__(self):
        for piece in self._left:
            yield piece
        if self.error:
            error, self.error = self.error, None
            raise error


def responder(status=200, body: bytes = b"", pieces: list[bytes] | None = None, error=None,
              content_type="application/json", **headers):
    def handle(request):
        h = {"content-type": content_type, **headers} if content_type else dict(headers)
        if pieces is not None:
            return httpx2.Response(status, headers=h, stream=Pieces(pieces, error))
        return httpx2.Response(status, headers=h, content=body)
    return handle


def call(handler, body: dict, *, is_async: bool = False):
    """What user code sees: ("value", object dumps) or ("raised", type, message, partial)."""
    def dump(x):
        return x.model_dump(warnings=False) if hasattr(x, "model_dump") else x

    async def run_async():
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
        async with openai.AsyncOpenAI(base_url="https://api.openai.com/v1", api_key="k", max_retries=0,
                                      http_client=http) as client:
            got = []
            try:
                result = await client.chat.completions.create(**body)
                if body.get("stream"):
                    async for chunk in result:
                        got.append(dump(chunk))
                    return ("value", got)
                return ("value", dump(result))
            except Exception as exc:
                return ("raised", type(exc), str(exc), got)

    if is_async:
        return asyncio.run(run_async())
    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    with openai.OpenAI(base_url="https://api.openai.com/v1", api_key="k", max_retries=0, http_client=http) as client:
        got = []
        try:
            result = client.chat.completions.create(**body)
            if body.get("stream"):
                for chunk in result:
                    got.append(dump(chunk))
                return ("value", got)
            return ("value", dump(result))
        except Exception as exc:
            return ("raised", type(exc), str(exc), got)


def same_with_and_without(fn):
    """``fn()`` without tokmagic, then with it: the results must be equal; returns the
    result and the records of the second run."""
    tokmagic.uninstall()
    try:
        session.reset()
        off = fn()
        assert session.records() == []
    finally:
        tokmagic.install()
    session.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TokmagicWarning)
        on = fn()
    assert on == off
    return on, session.records()


def one(records, status: str):
    assert len(records) == 1, records
    r = records[0]
    assert r.status == status, (r.status, r.error)
    return r


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def is_async(request):
    return request.param


# -- bodies that are not what the API promises ------------------------------------------

BAD_BODIES = {
    "truncated-json": (b'{"id": ', "application/json"),
    "html": (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    "json-list": (b'[{"usage": {"prompt_tokens": 5}}]', "application/json"),
    "json-string": (b'"ok"', "application/json"),
    "empty": (b"", "application/json"),
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_body_is_unparsed(name, is_async):
    body, ctype = BAD_BODIES[name]
    seen, records = same_with_and_without(lambda: call(responder(body=body, content_type=ctype), WHOLE_BODY,
                                                       is_async=is_async))
    r = one(records, "unparsed")
    assert r.http_status == 200
    assert r.usage.total_tokens == 0 and r.estimated is False
    assert r.model == WHOLE_BODY["model"]  # the request still names it
    assert r.cost_usd != r.cost_usd  # NaN: nothing was read, so nothing is priced


def test_bad_body_through_a_stream_read(is_async):
    """The same malformed body read piece by piece, as with_streaming_response reads
    it: the SDK's own JSON error, and an unparsed record."""
    pieces = [b'{"id": "x", "choices": [', b'{"index": 0, "mess']

    def run():
        handler = responder(pieces=pieces)
        if is_async:
            async def go():
                http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
                async with openai.AsyncOpenAI(base_url="https://api.openai.com/v1", api_key="k", max_retries=0,
                                              http_client=http) as c:
                    try:
                        async with c.chat.completions.with_streaming_response.create(**WHOLE_BODY) as resp:
                            return ("value", (await resp.parse()).model_dump())
                    except Exception as exc:
                        return ("raised", type(exc), str(exc))
            return asyncio.run(go())
        http = httpx2.Client(transport=httpx2.MockTransport(handler))
        with openai.OpenAI(base_url="https://api.openai.com/v1", api_key="k", max_retries=0, http_client=http) as c:
            try:
                with c.chat.completions.with_streaming_response.create(**WHOLE_BODY) as resp:
                    return ("value", resp.parse().model_dump())
            except Exception as exc:
                return ("raised", type(exc), str(exc))

    seen, records = same_with_and_without(run)
    assert seen[0] == "raised" and issubclass(seen[1], ValueError)
    r = one(records, "unparsed")
    assert r.usage.total_tokens == 0


@pytest.mark.parametrize("delivery", ["in-memory", "pieces"])
def test_stream_read_whole_by_the_transport(delivery, is_async):
    """An SSE body the transport hands over already read (an in-memory mock such as
    MockTransport or respx, a cache) is read as a stream too, not as JSON."""
    case = load_case("openai-chat-stream-no-usage")
    sse = case["response"]["sse"].encode()
    handler = (responder(body=sse, content_type="text/event-stream") if delivery == "in-memory"
               else responder(pieces=[sse], content_type="text/event-stream"))
    seen, records = same_with_and_without(lambda: call(handler, case["request"]["body"], is_async=is_async))
    assert seen[0] == "value" and len(seen[1]) > 5
    r = one(records, "ok")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in seen[1] if c["choices"])
    enc = tiktoken.encoding_for_model("gpt-3.5-turbo")
    assert r.estimated is True and r.usage.output_tokens == len(enc.encode(text))  # counted once
    assert r.model == case["expected"]["model"]


def test_error_status_with_html_body(is_async):
    seen, records = same_with_and_without(lambda: call(
        responder(status=502, body=b"<html>Bad gateway</html>", content_type="text/html"), WHOLE_BODY,
        is_async=is_async))
    assert seen[0] == "raised" and issubclass(seen[1], openai.APIStatusError)
    r = one(records, "error")
    assert r.http_status == 502 and r.usage.total_tokens == 0 and r.cost_usd == 0.0


# -- broken streams ------------------------------------------------------------------------

def test_stream_with_a_garbage_event(is_async, fresh_warnings):
    pieces = [e.encode() for e in EVENTS[:2]] + [b"data: {not json at all\n\n"] + [e.encode() for e in EVENTS[2:]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen, records = same_with_and_without(lambda: call(
            responder(pieces=pieces, content_type="text/event-stream"), STREAM_BODY, is_async=is_async))
    assert seen[0] == "raised" and len(seen[3]) == 2  # the SDK's own error, after two chunks
    r = one(records, "unparsed")
    assert r.stream is True and r.http_status == 200
    # the provider's data, not a tokmagic bug: said as such, once
    (said,) = [str(w.message) for w in caught if issubclass(w.category, TokmagicWarning)]
    assert "an event is not JSON" in said and "Please report" not in said


def _cut_inside_an_event() -> list[bytes]:
    whole = "".join(EVENTS[:3]).encode()
    return [whole, EVENTS[3].encode()[:40]]


@pytest.mark.parametrize("ending", ["dropped-connection", "clean-eof"])
def test_stream_cut_mid_event(ending, is_async):
    """The body stops inside an event: with the connection dropped (the SDK raises its
    connection error) or closed cleanly (the SDK ends the stream quietly). Either way
    the call is interrupted and its tokens estimated."""
    error = httpx2.RemoteProtocolError("peer closed connection") if ending == "dropped-connection" else None
    seen, records = same_with_and_without(lambda: call(
        responder(pieces=_cut_inside_an_event(), error=error, content_type="text/event-stream"),
        STREAM_BODY, is_async=is_async))
    if error:
        assert seen[0] == "raised" and seen[1] is openai.APIConnectionError and len(seen[3]) == 3
    else:
        assert seen[0] == "value" and len(seen[1]) == 3
    r = one(records, "interrupted")
    assert r.estimated is True and r.usage.input_tokens > 0
    assert r.error == ("RemoteProtocolError" if error else "IncompleteStream")
    assert r.model == STREAM_CASE["expected"]["model"]


def test_stream_closed_early_by_the_user(is_async):
    """User code stops reading after the first chunk and closes the stream."""
    pieces = [e.encode() for e in EVENTS]

    def run():
        handler = responder(pieces=pieces, content_type="text/event-stream")
        if is_async:
            async def go():
                http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
                async with openai.AsyncOpenAI(base_url="https://api.openai.com/v1", api_key="k",
                                              http_client=http) as c:
                    stream = await c.chat.completions.create(**STREAM_BODY)
                    async for chunk in stream:
                        await stream.close()
                        return chunk.model_dump()
            return asyncio.run(go())
        http = httpx2.Client(transport=httpx2.MockTransport(handler))
        with openai.OpenAI(base_url="https://api.openai.com/v1", api_key="k", http_client=http) as c:
            stream = c.chat.completions.create(**STREAM_BODY)
            for chunk in stream:
                stream.close()
                return chunk.model_dump()

    seen, records = same_with_and_without(run)
    r = one(records, "interrupted")
    assert r.error == "ClosedEarly" and r.estimated is True


# -- compression ---------------------------------------------------------------------------

def _http_decodes(encoding: str) -> bool:
    """Whether httpx2 here decodes the encoding (zstd needs backports.zstd before 3.14)."""
    from httpx2 import _decoders

    return encoding in _decoders.SUPPORTED_DECODERS


def _compress(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data)
    if encoding == "br":
        return brotli.compress(data)
    if encoding == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    if encoding == "deflate":
        import zlib
        return zlib.compress(data)
    raise ValueError(encoding)


def _random_cuts(data: bytes, seed: int) -> list[bytes]:
    rnd, out, i = random.Random(seed), [], 0
    while i < len(data):
        n = rnd.choice((1, 2, 3, 5, 17, 64, 300))
        out.append(data[i:i + n])
        i += n
    return out


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd", "deflate"])
def test_compressed_body(encoding, is_async):
    raw = json.dumps(WHOLE_CASE["response"]["body"]).encode()
    compressed = _compress(encoding, raw)
    seen, records = same_with_and_without(lambda: call(
        responder(body=compressed, **{"content-encoding": encoding}), WHOLE_BODY, is_async=is_async))
    if not _http_decodes(encoding):  # the SDK gets the raw bytes, with or without tokmagic
        assert seen[0] == "raised" and len(records) == 1
        return
    assert seen[0] == "value" and seen[1]["usage"]["prompt_tokens"] == WHOLE_CASE["expected"]["input_tokens"]
    r = one(records, "ok")
    e = WHOLE_CASE["expected"]
    assert (r.usage.input_tokens, r.usage.output_tokens) == (e["input_tokens"], e["output_tokens"])


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd", "deflate"])
def test_compressed_stream_cut_anywhere(encoding, is_async):
    """A compressed stream cut at random bytes: the SDK gets the same chunks and tokmagic
    reads the usage from its own decoded copy."""
    compressed = _compress(encoding, STREAM_CASE["response"]["sse"].encode())
    pieces = _random_cuts(compressed, seed=len(encoding))
    seen, records = same_with_and_without(lambda: call(
        responder(pieces=pieces, content_type="text/event-stream", **{"content-encoding": encoding}),
        STREAM_BODY, is_async=is_async))
    if not _http_decodes(encoding):
        assert seen[0] == "raised" and len(records) == 1
        return
    assert seen[0] == "value" and seen[1][-1]["usage"]["prompt_tokens"] == STREAM_CASE["expected"]["input_tokens"]
    r = one(records, "ok")
    e = STREAM_CASE["expected"]
    assert (r.usage.input_tokens, r.usage.output_tokens) == (e["input_tokens"], e["output_tokens"])
    assert r.estimated is False


def test_unknown_content_encoding_does_not_break_the_call(is_async):
    """An encoding tokmagic cannot decode: the SDK's result is untouched; the record
    says it could not be read."""
    pieces = [e.encode() for e in EVENTS]
    seen, records = same_with_and_without(lambda: call(
        responder(pieces=pieces, content_type="text/event-stream", **{"content-encoding": "identity, x-unknown"}),
        STREAM_BODY, is_async=is_async))
    assert seen[0] == "value" and len(seen[1]) == len(EVENTS) - 1
    one(records, "unparsed")


# -- UTF-8 split across reads --------------------------------------------------------------

TEXT = ["Naïve café — ", "東京の夜 🎉", " déjà vu ✓"]


def _utf8_stream(with_usage: bool) -> tuple[list[bytes], str]:
    chunks = []
    for i, part in enumerate(TEXT):
        chunks.append({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18",
                       "choices": [{"index": 0, "delta": {"content": part}, "finish_reason": None}]})
    if with_usage:
        chunks.append({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18",
                       "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 13, "total_tokens": 24}})
    body = "".join(f"data: {json.dumps(c, ensure_ascii=False)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    data = body.encode()
    # cut inside every multi-byte character: each piece ends one byte into a character
    pieces, start = [], 0
    for i, byte in enumerate(data):
        if byte >= 0xC0:  # the lead byte of a multi-byte character
            pieces.append(data[start:i + 1])
            start = i + 1
    pieces.append(data[start:])
    assert len(pieces) > 10
    return pieces, "".join(TEXT)


@pytest.mark.parametrize("with_usage", [True, False], ids=["usage", "no-usage"])
def test_utf8_character_split_between_reads(with_usage, is_async):
    pieces, text = _utf8_stream(with_usage)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say it."}], "stream": True}
    seen, records = same_with_and_without(lambda: call(
        responder(pieces=pieces, content_type="text/event-stream"), body, is_async=is_async))
    assert "".join(c["choices"][0]["delta"]["content"] for c in seen[1] if c["choices"]) == text
    r = one(records, "ok")
    if with_usage:
        assert (r.usage.input_tokens, r.usage.output_tokens, r.estimated) == (11, 13, False)
    else:
        # the estimate counts exactly the text: no character was mangled at a cut
        enc = tiktoken.get_encoding("o200k_base")
        assert r.estimated is True and r.usage.output_tokens == len(enc.encode(text))


# -- requests that are not LLM calls ---------------------------------------------------------

def test_non_llm_requests_are_not_recorded(is_async):
    models = {"object": "list", "data": [{"id": "gpt-4o", "object": "model", "created": 1, "owned_by": "openai"}]}

    def handler(request):
        if request.url.path.endswith("/models"):
            return httpx2.Response(200, json=models)
        return httpx2.Response(200, json={"ok": True, "usage": {"prompt_tokens": 3}})

    def run():
        if is_async:
            async def go():
                http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
                async with openai.AsyncOpenAI(base_url="https://api.openai.com/v1", api_key="k", http_client=http) as c:
                    listed = [m.id async for m in c.models.list()]
                    other = await c.post("/other", cast_to=object, body={"model": "gpt-4o"})
                    got = await c.get("/chat/completions", cast_to=object)  # GET: not a completion
                    raw = (await http.post("https://example.com/v1/not-llm", json={})).json()
                return listed, other, got, raw
            return asyncio.run(go())
        http = httpx2.Client(transport=httpx2.MockTransport(handler))
        with openai.OpenAI(base_url="https://api.openai.com/v1", api_key="k", http_client=http) as c:
            listed = [m.id for m in c.models.list()]
            other = c.post("/other", cast_to=object, body={"model": "gpt-4o"})
            got = c.get("/chat/completions", cast_to=object)
            raw = http.post("https://example.com/v1/not-llm", json={}).json()
        return listed, other, got, raw

    seen, records = same_with_and_without(run)
    assert seen[0] == ["gpt-4o"] and seen[1]["ok"] is True
    assert records == []


def test_legacy_httpx_client_is_captured_too():
    """A legacy httpx (0.x) client passed to the SDK is watched the same way."""
    body = json.dumps(WHOLE_CASE["response"]["body"]).encode()
    transport = httpx.MockTransport(lambda req: httpx.Response(200, content=body,
                                                               headers={"content-type": "application/json"}))
    try:
        client = openai.OpenAI(base_url="https://api.openai.com/v1", api_key="k",
                               http_client=httpx.Client(transport=transport))
    except TypeError as exc:
        pytest.skip(f"this openai SDK takes no legacy httpx client: {exc}")
    with client:
        result = client.chat.completions.create(**WHOLE_BODY)
    assert result.usage.prompt_tokens == WHOLE_CASE["expected"]["input_tokens"]
    r = one(session.records(), "ok")
    assert r.usage.output_tokens == WHOLE_CASE["expected"]["output_tokens"]


# -- failures inside tokmagic ----------------------------------------------------------------

class InjectedFailure(Exception):
    """Raised by a monkeypatched part of tokmagic; the name keys its one warning."""


# (what to break, the call it breaks, the status the record gets, or None for no record)
INJECTIONS = {
    "read_body": ("tokmagic.protocols.openai.Chat.read_body", "whole", "unparsed"),
    "stream_event": ("tokmagic.protocols.openai.ChatStream.event", "stream", "unparsed"),
    "stream_setup": ("tokmagic.capture.outcome.decoder_for", "stream", "unparsed"),
    "record": ("tokmagic.capture.exchange.provider_for", "whole", None),
    "recognise": ("tokmagic.capture.httpx.recognise", "whole", None),
}


@pytest.mark.parametrize("where", sorted(INJECTIONS))
def test_failure_inside_tokmagic_is_contained(monkeypatch, where, is_async):
    target, kind, status = INJECTIONS[where]
    InjectedFailureHere = type(f"InjectedFailure_{where}_{int(is_async)}", (InjectedFailure,), {})

    def boom(*args, **kwargs):
        raise InjectedFailureHere("injected")

    if kind == "whole":
        handler, body = responder(body=json.dumps(WHOLE_CASE["response"]["body"]).encode()), WHOLE_BODY
    else:
        handler = responder(pieces=[e.encode() for e in EVENTS], content_type="text/event-stream")
        body = STREAM_BODY
    tokmagic.uninstall()
    try:
        expected = call(handler, body, is_async=is_async)
    finally:
        tokmagic.install()
    session.reset()
    monkeypatch.setattr(target, boom)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = call(handler, body, is_async=is_async)
        second = call(handler, body, is_async=is_async)
        records = session.records()
    # the call returned normally, with exactly what it returns without tokmagic
    assert first == expected == second
    assert first[0] == "value"
    ours = [w for w in caught if issubclass(w.category, TokmagicWarning)
            and InjectedFailureHere.__name__ in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in caught]  # once, not per call
    if status is None:
        assert records == []
    else:
        assert [r.status for r in records] == [status, status]
