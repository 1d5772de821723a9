"""The stream readers give the same events however the bytes are cut: at every byte,
inside multi-byte characters and inside \\r\\n pairs. The reference is the openai SDK's
own SSE decoder reading the whole body."""
import random

import pytest
from openai._streaming import SSEDecoder

from tokmagic.protocols.sse import NDJSONReader, SSEReader

from .conftest import all_cases

STREAMS = [c for c in all_cases() if c["response"].get("sse") and c["response"].get("stream_format") == "sse"]
NDJSON = [c for c in all_cases() if c["response"].get("stream_format") == "ndjson"]


def read(reader_type, pieces):
    events = []
    reader = reader_type(lambda name, data: events.append((name, data)))
    for piece in pieces:
        reader.feed(piece)
    reader.close()
    return events


def reference(body: bytes):
    return [(e.event, e.data) for e in SSEDecoder().iter_bytes(iter([body])) if e.data]


def cuts(body: bytes, seed: int):
    rnd, i, out = random.Random(seed), 0, []
    while i < len(body):
        n = rnd.choice((1, 2, 3, 5, 64))
        out.append(body[i:i + n])
        i += n
    return out


@pytest.mark.parametrize("case", STREAMS, ids=lambda c: c["id"])
def test_sse_matches_the_sdk_decoder_however_cut(case):
    body = case["response"]["sse"].encode()
    expected = reference(body)
    assert expected, "the case has events"
    assert read(SSEReader, [body]) == expected
    assert read(SSEReader, [body[i:i + 1] for i in range(len(body))]) == expected
    for seed in range(5):
        assert read(SSEReader, cuts(body, seed)) == expected


def test_sse_cut_inside_a_utf8_character_and_crlf():
    text = "data: {\"t\": \"caf\u00e9 \u2014 \U0001F600\"}\r\n\r\ndata: [DONE]\r\n\r\n"
    body = text.encode()
    expected = [(None, "{\"t\": \"caf\u00e9 \u2014 \U0001F600\"}"), (None, "[DONE]")]
    for i in range(1, len(body)):
        assert read(SSEReader, [body[:i], body[i:]]) == expected, i


@pytest.mark.parametrize("case", NDJSON, ids=lambda c: c["id"])
def test_ndjson_lines_however_cut(case):
    body = case["response"]["sse"].encode()
    expected = [(None, line) for line in body.decode().splitlines() if line.strip()]
    assert read(NDJSONReader, [body[i:i + 1] for i in range(len(body))]) == expected
