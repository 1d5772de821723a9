#!/usr/bin/env python3
"""How much time tokmagic's capture adds to a call, measured in-process against mocked
transports (no sockets), with and without ``tokmagic.install()``.

    python benchmarks/overhead.py [--quick] [--no-callgrind]

Two measures sit side by side for every case:

* wall time (``time.perf_counter``), the best of several repeats, bare and captured
  runs alternating in one process;
* CPU instructions under callgrind, which are repeatable where wall clocks are not.
  Each variant (bare, captured) runs in its own process under ``valgrind --tool=callgrind
  --instr-atstart=no``; after an identical warm-up it counts one block of 0 calls and one
  of N calls, and reports (instr(N) - instr(0)) / N, so setup and warm-up cancel out. The
  count is switched on and dumped around each block by callgrind's client requests,
  issued from a few bytes of machine code (x86-64 Linux only). A second captured process,
  identical to the first, checks that the method repeats.

See benchmarks/README.md for how to read the table.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure the checkout this file lives in
SHARED = Path(os.environ.get("TOKMAGIC_SHARED", ROOT.parent / "shared"))
CASES_DIR = SHARED / "corpus" / "cases"
if not os.environ.get("TIKTOKEN_CACHE_DIR") and (SHARED / "tiktoken_cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken_cache")

import tokmagic  # noqa: E402
from tokmagic.monitor import session  # noqa: E402

#: Modules that ``%load_ext tokmagic`` must leave unimported.
HEAVY = ("pandas", "matplotlib", "ipywidgets", "tiktoken", "genai_prices", "httpx", "httpx2")
#: Identical runs under callgrind must agree within this fraction.
AGREEMENT = 0.003
#: Extra delta events in the long streams, for the marginal per-chunk cost.
EXTRA_CHUNKS = 64


# -- the recorded exchanges ----------------------------------------------------------

def load_case(case_id: str) -> dict:
    path = CASES_DIR / f"{case_id}.json"
    if not path.is_file():
        sys.exit(f"overhead.py: corpus case {path} not found (set TOKMAGIC_SHARED to the shared folder)")
    return json.loads(path.read_text())


def response_headers(case: dict) -> dict:
    drop = ("content-length", "content-encoding", "transfer-encoding")
    return {k: v for k, v in case["response"]["headers"].items() if k.lower() not in drop}


def response_body(case: dict) -> bytes:
    return json.dumps(case["response"]["body"]).encode()


def request_body(case: dict) -> bytes:
    return json.dumps(case["request"]["body"]).encode()


def sse_events(case: dict) -> list[bytes]:
    """The recorded stream cut into its events, one chunk each, text kept exactly."""
    text = case["response"]["sse"] or ""
    return [p.encode() for p in re.findall(r".*?(?:\r?\n\r?\n|\Z)", text, re.S) if p]


def lengthen(events: list[bytes], is_delta: Callable[[bytes], bool], extra: int) -> list[bytes]:
    """The stream with ``extra`` more delta events (copies of its own), inserted after its
    last delta, so that only the number of chunks changes."""
    deltas = [e for e in events if is_delta(e)]
    last = max(i for i, e in enumerate(events) if is_delta(e))
    more = [deltas[i % len(deltas)] for i in range(extra)]
    return events[:last + 1] + more + events[last + 1:]


# -- mocked HTTP -----------------------------------------------------------------------

def _stream_classes(module):
    """Response bodies that yield one event per chunk and, like a network stream, cannot
    be replayed: an SDK that iterates the stream again to drain it (openai's async client
    does, after [DONE]) gets what is left, not the whole stream a second time."""
    class Events(module.SyncByteStream):
        def __init__(self, events):
            self.events = iter(events)

        def __iter__(self):
            yield from self.events

    class AsyncEvents(module.AsyncByteStream):
        def __init__(self, events):
            self.events = iter(events)

        async def __aiter__(self):
            for event in self.events:
                yield event

    return Events, AsyncEvents


def json_handler(module, headers: dict, body: bytes, status: int = 200):
    def handle(request):
        return module.Response(status, headers=headers, content=body)
    return handle


def sse_handler(module, headers: dict, events: list[bytes], asynchronous: bool = False):
    events_type = _stream_classes(module)[1 if asynchronous else 0]
    headers = {**headers, "content-type": headers.get("content-type", "text/event-stream")}

    def handle(request):
        return module.Response(200, headers=headers, stream=events_type(events))
    return handle


# -- mocked connections: urllib3 (requests, botocore) and aiohttp -----------------------
#
# These libraries have no in-memory transport that keeps their own HTTP code on the path,
# so the lowest layer is replaced instead: urllib3 gets a socket object that drops what is
# sent and reads a recorded HTTP/1.1 response back (http.client parses it, urllib3 pools the
# connection as usual), aiohttp a connector whose transport answers each request by handing
# the recorded response to aiohttp's own protocol, parser and StreamReader.

_REASONS = {200: "OK", 404: "Not Found"}


def http_head(status: int, headers: dict, length: int | None) -> bytes:
    """A response's status line and headers; chunked transfer encoding when ``length`` is None."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}",
             *(f"{name}: {value}" for name, value in headers.items()),
             "transfer-encoding: chunked" if length is None else f"content-length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http_reply(status: int, headers: dict, body: bytes) -> bytes:
    return http_head(status, headers, len(body)) + body


def http_chunked(headers: dict, events: list[bytes]) -> list[bytes]:
    """A streamed response as the network delivers it: the head, then one HTTP chunk per
    event, then the last chunk."""
    return [http_head(200, headers, None), *(b"%x\r\n%s\r\n" % (len(e), e) for e in events), b"0\r\n\r\n"]


class _ReplaySocket:
    """A connected socket for urllib3 / http.client: what is sent is dropped, and each
    response read from it is a fresh copy of one recorded HTTP response."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply

    def makefile(self, mode: str = "rb", buffering: int = -1):
        import io
        return io.BytesIO(self.reply)

    def sendall(self, data) -> None:
        pass

    def settimeout(self, timeout) -> None:
        pass

    def close(self) -> None:
        pass


def replay_pool(pool_type: type, reply: bytes) -> type:
    """A urllib3 connection pool class whose connections talk to a _ReplaySocket."""
    connection_type = pool_type.ConnectionCls

    class ReplayConnection(connection_type):
        def _new_conn(self):
            return _ReplaySocket(reply)

        @property
        def is_connected(self) -> bool:  # the real test polls the socket's file descriptor
            return self.sock is not None

    return type("ReplayPool", (pool_type,), {"ConnectionCls": ReplayConnection})


def _requests_session(reply: bytes):
    """A requests Session whose http:// adapter sends through urllib3 to a _ReplaySocket
    (the environment's proxy settings ignored, so every run takes the same path)."""
    import requests
    import urllib3

    pool = replay_pool(urllib3.HTTPConnectionPool, reply)

    class ReplayAdapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": pool}

    session = requests.Session()
    session.trust_env = False
    session.mount("http://", ReplayAdapter())
    return session


class _ReplayTransport:
    """An asyncio transport for aiohttp's protocol: each request written to it is
    answered, on the next turn of the loop, with the recorded response's pieces, each
    passed to the protocol as one read from the network."""

    def __init__(self, protocol, pieces: list[bytes], loop) -> None:
        self.protocol, self.pieces, self.loop = protocol, pieces, loop
        self.closing = False

    def write(self, data) -> None:
        if data[:8].split(b" ", 1)[0] in (b"GET", b"POST"):  # a request line: a new request
            self.loop.call_soon(self._answer)

    def writelines(self, chunks) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _answer(self) -> None:
        receive = self.protocol.data_received
        for piece in self.pieces:
            receive(piece)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    abort = close

    def get_extra_info(self, name: str, default=None):
        return default

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return True


def aiohttp_session(pieces: list[bytes]):
    """An aiohttp ClientSession (made inside a running loop) whose connector's connections
    are _ReplayTransports: aiohttp's client, parser and StreamReader run, no socket does.
    Connections are pooled and reused, with no keep-alive expiry, so every call takes the
    same path."""
    import aiohttp

    class ReplayConnector(aiohttp.BaseConnector):
        async def _create_connection(self, req, traces, timeout):
            protocol = self._factory()
            protocol.connection_made(_ReplayTransport(protocol, pieces, self._loop))
            return protocol

    return aiohttp.ClientSession(connector=ReplayConnector(keepalive_timeout=None))


# -- what one case measures ----------------------------------------------------------

class Bench:
    """``run(n)`` makes n calls; ``prepare(n)`` does untimed work the n calls need."""

    chunks = 0

    def prepare(self, n: int) -> None:
        pass

    def run(self, n: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SyncBench(Bench):
    def __init__(self, call: Callable[[], object], chunks: int = 0) -> None:
        self.call, self.chunks = call, chunks

    def run(self, n: int) -> None:
        call = self.call
        for _ in range(n):
            call()


class AsyncBench(Bench):
    def __init__(self, call, chunks: int = 0) -> None:
        self.call, self.chunks = call, chunks
        self.loop = asyncio.new_event_loop()
        # A frozen clock: the SDKs arm timers they cancel (openai's drain timeout), and with
        # a real clock how many of them expire first depends on the machine's speed, which
        # made identical runs differ. No mocked call waits on a timer.
        self.loop.time = lambda: 0.0

    async def _many(self, n: int) -> None:
        call = self.call
        for _ in range(n):
            await call()

    def run(self, n: int) -> None:
        self.loop.run_until_complete(self._many(n))

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


def _bare_client(module, method: str, url: str, body: bytes | None):
    import importlib

    httpx = importlib.import_module(module)
    handler = json_handler(httpx, {"content-type": "application/json"}, b'{"object":"list","data":[]}')
    client = httpx.Client(transport=httpx.MockTransport(handler))
    headers = {"content-type": "application/json"} if body is not None else None
    return SyncBench(lambda: client.request(method, url, content=body, headers=headers))


def b_get_models(module: str) -> Bench:
    return _bare_client(module, "GET", "https://api.openai.com/v1/models", None)


def b_post_other(module: str) -> Bench:
    return _bare_client(module, "POST", "https://api.example.com/other", b'{"query":"hello","n":1}')


def b_httpx_raw_chat() -> Bench:
    import httpx

    case = load_case("openai-chat-basic")
    client = httpx.Client(transport=httpx.MockTransport(
        json_handler(httpx, response_headers(case), response_body(case))))
    body = request_body(case)
    headers = {"content-type": "application/json"}
    return SyncBench(lambda: client.post("https://api.openai.com/v1/chat/completions", content=body,
                                         headers=headers))


def _openai(handler, asynchronous: bool = False):
    import httpx2
    import openai

    if asynchronous:
        return openai.AsyncOpenAI(http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
                                  base_url="https://api.openai.com/v1", api_key="sk-bench")
    return openai.OpenAI(http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
                         base_url="https://api.openai.com/v1", api_key="sk-bench")


def _anthropic(handler):
    import anthropic
    import httpx2

    return anthropic.Anthropic(http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
                               base_url="https://api.anthropic.com", api_key="sk-ant-bench")


def _openai_delta(event: bytes) -> bool:
    return b'"delta":{' in event and b'"finish_reason":null' in event


def _anthropic_delta(event: bytes) -> bool:
    return event.startswith(b"event: content_block_delta")


def b_openai_chat(asynchronous: bool = False) -> Bench:
    import httpx2

    case = load_case("openai-chat-basic")
    client = _openai(json_handler(httpx2, response_headers(case), response_body(case)), asynchronous)
    kwargs = case["request"]["body"]
    if asynchronous:
        return AsyncBench(lambda: client.chat.completions.create(**kwargs))
    return SyncBench(lambda: client.chat.completions.create(**kwargs))


def b_openai_stream(asynchronous: bool = False, extra: int = 0) -> Bench:
    import httpx2

    case = load_case("openai-chat-stream-include-usage")
    events = sse_events(case)
    if extra:
        events = lengthen(events, _openai_delta, extra)
    client = _openai(sse_handler(httpx2, response_headers(case), events, asynchronous), asynchronous)
    kwargs = case["request"]["body"]
    if asynchronous:
        async def call():
            async for _ in await client.chat.completions.create(**kwargs):
                pass
        return AsyncBench(call, len(events))

    def call():
        for _ in client.chat.completions.create(**kwargs):
            pass
    return SyncBench(call, len(events))


def b_anthropic(stream: bool = False, extra: int = 0) -> Bench:
    import httpx2

    case = load_case("anthropic-messages-stream" if stream else "anthropic-messages-basic")
    kwargs = case["request"]["body"]
    if not stream:
        client = _anthropic(json_handler(httpx2, response_headers(case), response_body(case)))
        return SyncBench(lambda: client.messages.create(**kwargs))
    events = sse_events(case)
    if extra:
        events = lengthen(events, _anthropic_delta, extra)
    client = _anthropic(sse_handler(httpx2, response_headers(case), events))

    def call():
        for _ in client.messages.create(**kwargs):
            pass
    return SyncBench(call, len(events))


_OTHER_JSON = {"content-type": "application/json"}
_OTHER_BODY = b'{"query":"hello","n":1}'


def b_requests(method: str, path: str, body: bytes | None, case_id: str | None = None) -> Bench:
    """``requests.Session.request`` through urllib3 to a mocked socket, reading the body."""
    if case_id is None:
        reply = http_reply(200, _OTHER_JSON, b'{"object":"list","data":[]}')
    else:
        case = load_case(case_id)
        reply = http_reply(200, response_headers(case), response_body(case))
    session = _requests_session(reply)
    url = "http://api.openai.com" + path
    headers = _OTHER_JSON if body is not None else None
    return SyncBench(lambda: session.request(method, url, data=body, headers=headers).content)


#: A Converse answer as Bedrock Runtime sends it (Bedrock is not in the shared corpus).
_CONVERSE_REPLY = {"output": {"message": {"role": "assistant", "content": [{"text": "Hello! How can I help?"}]}},
                   "stopReason": "end_turn",
                   "usage": {"inputTokens": 12, "outputTokens": 7, "totalTokens": 19},
                   "metrics": {"latencyMs": 312}}


def b_bedrock_converse() -> Bench:
    """boto3's bedrock-runtime ``converse`` (SigV4 signing, botocore's parsing) through
    botocore's own urllib3 pool to a mocked socket."""
    import boto3

    body = json.dumps(_CONVERSE_REPLY).encode()
    reply = http_reply(200, {"content-type": "application/json",
                             "x-amzn-requestid": "0f5c2f5e-3d9a-4d1e-9b7e-5a1f2c3d4e5f"}, body)
    client = boto3.client("bedrock-runtime", region_name="us-east-1",
                          endpoint_url="http://bedrock-runtime.us-east-1.amazonaws.com",
                          aws_access_key_id="AKIDBENCH", aws_secret_access_key="bench-secret")
    pools = client._endpoint.http_session._pool_classes_by_scheme  # the dict its PoolManager uses
    pools["http"] = replay_pool(pools["http"], reply)
    messages = [{"role": "user", "content": [{"text": "Say hello."}]}]
    return SyncBench(lambda: client.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                                             messages=messages))


class AiohttpBench(AsyncBench):
    """``request(session)`` awaited once per call, on one aiohttp session whose
    connections answer with ``pieces``."""

    def __init__(self, pieces: list[bytes], request, chunks: int = 0) -> None:
        super().__init__(None, chunks)

        async def make():
            return aiohttp_session(pieces)
        self.session = self.loop.run_until_complete(make())
        self.call = lambda: request(self.session)

    def close(self) -> None:
        self.loop.run_until_complete(self.session.close())
        super().close()


def b_aiohttp_other(method: str, path: str, body: bytes | None) -> Bench:
    pieces = [http_reply(200, _OTHER_JSON, b'{"object":"list","data":[]}')]
    url = "http://api.openai.com" + path
    headers = _OTHER_JSON if body is not None else None

    async def call(session):
        async with session.request(method, url, data=body, headers=headers) as response:
            await response.read()
    return AiohttpBench(pieces, call)


def b_aiohttp_chat() -> Bench:
    case = load_case("openai-chat-basic")
    pieces = [http_reply(200, response_headers(case), response_body(case))]
    body = request_body(case)

    async def call(session):
        async with session.post("http://api.openai.com/v1/chat/completions", data=body,
                                headers=_OTHER_JSON) as response:
            await response.json()
    return AiohttpBench(pieces, call)


def b_aiohttp_stream(extra: int = 0) -> Bench:
    """A streamed chat answer read line by line, one SSE event per network read."""
    case = load_case("openai-chat-stream-include-usage")
    events = sse_events(case)
    if extra:
        events = lengthen(events, _openai_delta, extra)
    pieces = http_chunked(response_headers(case), events)
    body = request_body(case)

    async def call(session):
        async with session.post("http://api.openai.com/v1/chat/completions", data=body,
                                headers=_OTHER_JSON) as response:
            async for _ in response.content:
                pass
    return AiohttpBench(pieces, call, len(events))


class ResolveBench(Bench):
    """``session.records()`` resolving n records captured beforehand (untimed)."""

    def __init__(self, case_id: str) -> None:
        import httpx2

        case = load_case(case_id)
        self.url = "https://api.openai.com" + case["request"]["path"]
        self.body = request_body(case)
        self.stream = case["response"].get("stream_format") == "sse"
        handler = (sse_handler(httpx2, response_headers(case), sse_events(case)) if self.stream
                   else json_handler(httpx2, response_headers(case), response_body(case)))
        self.client = httpx2.Client(transport=httpx2.MockTransport(handler))

    def prepare(self, n: int) -> None:
        session.reset()
        headers = {"content-type": "application/json"}
        for _ in range(n):
            if self.stream:
                with self.client.stream("POST", self.url, content=self.body, headers=headers) as r:
                    for _ in r.iter_raw():
                        pass
            else:
                self.client.post(self.url, content=self.body, headers=headers)
        if len(session._unresolved) != n:
            raise RuntimeError(f"expected {n} unresolved records, found {len(session._unresolved)}")

    def run(self, n: int) -> None:
        session.records()


@dataclass
class Case:
    key: str
    label: str
    build: Callable[[], Bench]
    calls: int                # N under callgrind in a full run (fixed: a case's per-call count
                              # moves a little with N, so runs compare only at the same N)
    target: str = ""          # "us:2" (added µs), "pct:5" (ratio), "" (none)
    deferred: bool = False    # off the call path: measured with tokmagic only


CASES = [
    Case("x2-get", "httpx2 GET /v1/models (not LLM)", lambda: b_get_models("httpx2"), 300, "us:2"),
    Case("x2-post", "httpx2 POST /other (not LLM)", lambda: b_post_other("httpx2"), 300, "us:2"),
    Case("oai", "openai chat", b_openai_chat, 40, "pct:5"),
    Case("oai-s", "openai chat stream", b_openai_stream, 16, "pct:5"),
    Case("oai-sl", "", lambda: b_openai_stream(extra=EXTRA_CHUNKS), 10),
    Case("ant", "anthropic messages", b_anthropic, 60, "pct:5"),
    Case("ant-s", "anthropic messages stream", lambda: b_anthropic(stream=True), 12, "pct:5"),
    Case("ant-sl", "", lambda: b_anthropic(stream=True, extra=EXTRA_CHUNKS), 10),
    Case("aoai", "openai chat, async", lambda: b_openai_chat(True), 40, "pct:5"),
    Case("aoai-s", "openai chat stream, async", lambda: b_openai_stream(True), 16, "pct:5"),
    Case("x1-get", "httpx 0.x GET /v1/models (not LLM)", lambda: b_get_models("httpx"), 300, "us:2"),
    Case("x1-post", "httpx 0.x POST /other (not LLM)", lambda: b_post_other("httpx"), 300, "us:2"),
    Case("x1-chat", "httpx 0.x raw POST /v1/chat/completions", b_httpx_raw_chat, 200),
    Case("rq-get", "requests GET /v1/models (not LLM)", lambda: b_requests("GET", "/v1/models", None), 200,
         "us:2"),
    Case("rq-post", "requests POST /other (not LLM)", lambda: b_requests("POST", "/other", _OTHER_BODY), 200,
         "us:2"),
    Case("brc", "boto3 bedrock-runtime converse", b_bedrock_converse, 30, "pct:5"),
    Case("rq-chat", "requests raw POST /v1/chat/completions",
         lambda: b_requests("POST", "/v1/chat/completions", request_body(load_case("openai-chat-basic")),
                            "openai-chat-basic"), 150),
    Case("ah-get", "aiohttp GET /v1/models (not LLM)", lambda: b_aiohttp_other("GET", "/v1/models", None), 200,
         "us:2"),
    Case("ah-post", "aiohttp POST /other (not LLM)", lambda: b_aiohttp_other("POST", "/other", _OTHER_BODY), 200,
         "us:2"),
    Case("ah-chat", "aiohttp raw POST /v1/chat/completions", b_aiohttp_chat, 150),
    Case("ah-s", "aiohttp raw POST /v1/chat/completions, stream", b_aiohttp_stream, 60),
    Case("ah-sl", "", lambda: b_aiohttp_stream(extra=EXTRA_CHUNKS), 30),
    Case("res-price", "records(): price, usage reported",
         lambda: ResolveBench("openai-chat-basic"), 300, deferred=True),
    Case("res-est", "records(): estimate + price, stream without usage",
         lambda: ResolveBench("openai-chat-stream-no-usage"), 300, deferred=True),
]
#: Rows computed from two cases: the marginal cost of one more chunk of a stream.
PER_CHUNK = [("oai-s", "oai-sl", "openai chat stream, per chunk", "pct:5"),
             ("ant-s", "ant-sl", "anthropic messages stream, per chunk", "pct:5"),
             ("ah-s", "ah-sl", "aiohttp raw stream, per chunk", "")]
BY_KEY = {c.key: c for c in CASES}


def set_variant(captured: bool) -> None:
    if captured:
        tokmagic.install()
    else:
        tokmagic.uninstall()


# -- wall time -----------------------------------------------------------------------

def wall_times(case: Case, seconds: float, repeats: int) -> tuple[dict, int]:
    """Best per-call seconds of each variant, and the n used (calibrated so that one
    repeat takes about ``seconds``)."""
    bench = case.build()
    variants = (True,) if case.deferred else (False, True)
    for captured in variants:  # warm-up: imports, caches, the interpreter's specialisation
        set_variant(captured)
        bench.prepare(20)
        bench.run(20)
    set_variant(True)
    bench.prepare(5)
    t = time.perf_counter()
    bench.run(5)
    per_call = max((time.perf_counter() - t) / 5, 1e-7)
    n = int(min(max(seconds / per_call, 20), 20000))
    best = {captured: math.inf for captured in variants}
    for r in range(repeats):
        for captured in (variants if r % 2 == 0 else variants[::-1]):
            set_variant(captured)
            bench.prepare(n)
            with no_gc():
                t = time.perf_counter()
                bench.run(n)
                best[captured] = min(best[captured], (time.perf_counter() - t) / n)
    bench.close()
    session.reset()
    return best, n


@contextmanager
def no_gc() -> Iterator[None]:
    """A measured block without the cyclic garbage collector, as timeit runs: when a full
    collection falls inside a block depends on the whole heap's history (which cases ran
    before, what the captured process imported), and one collection more or less in a
    block of 200 calls moved a case's count by 8,000 instructions per call."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# -- callgrind -------------------------------------------------------------------------

class Callgrind:
    """Callgrind's client requests (valgrind.h's magic instruction sequence), issued
    through a tiny function in executable memory. Outside valgrind they do nothing."""

    _CODE = bytes.fromhex(
        "4889f8"                                   # mov rax, rdi: the request block
        "31d2"                                     # xor edx, edx: the default result
        "48c1c703" "48c1c70d" "48c1c73d" "48c1c733"  # rol rdi, 3 / 13 / 61 / 51
        "4887db"                                   # xchg rbx, rbx: the request
        "4889d0"                                   # mov rax, rdx
        "c3")                                      # ret
    _BASE = (ord("C") << 24) | (ord("T") << 16)
    DUMP_AT, ZERO, START, STOP = _BASE + 3, _BASE + 1, _BASE + 4, _BASE + 5

    def __init__(self) -> None:
        import ctypes
        import mmap

        self._ctypes = ctypes
        self._page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._page.write(self._CODE)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        self._call = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p)(address)
        self._keep: list = []

    def request(self, code: int, arg: int = 0) -> int:
        block = (self._ctypes.c_uint64 * 6)(code, arg, 0, 0, 0, 0)
        return self._call(block)

    def dump(self, label: str) -> None:
        text = self._ctypes.create_string_buffer(label.encode())
        self._keep.append(text)
        self.request(self.DUMP_AT, self._ctypes.addressof(text))


def callgrind_supported() -> str | None:
    """None if callgrind can run here, else why not."""
    if shutil.which("valgrind") is None:
        return "valgrind not found"
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return "the client requests need x86-64 Linux"
    return None


def worker(captured: bool, plan: dict[str, int]) -> None:
    """Runs under callgrind: per case, warm up, then count a block of 0 and of n calls."""
    vg = Callgrind()
    set_variant(captured)
    for key, n in plan.items():
        started = time.perf_counter()
        case = BY_KEY[key]
        bench = case.build()
        bench.prepare(20)
        bench.run(20)
        session.reset()
        vg.request(vg.START)
        for calls in (0, n):
            bench.prepare(calls)
            with no_gc():
                vg.request(vg.ZERO)
                bench.run(calls)
                vg.dump(f"{key}|{calls}")
        vg.request(vg.STOP)
        bench.close()
        session.reset()
        print(f"worker: {key} {n} calls, {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


def start_worker(captured: bool, plan: dict[str, int], folder: Path) -> subprocess.Popen:
    """A worker under callgrind. Workers differ only in their plan file's content: their
    command lines and environments are the same length, as the memory layout, and with it
    the instruction count, shifts with them."""
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps({"captured": captured, "plan": plan}))
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
           f"--callgrind-out-file={folder / 'cg.out'}", sys.executable, __file__,
           "--worker", str(folder / "plan.json")]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    log = open(folder / "valgrind.log", "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(folder))


def read_worker(proc: subprocess.Popen, folder: Path) -> dict[str, float]:
    """Instructions per call of each case, from the worker's dumps."""
    if proc.wait() != 0:
        tail = (folder / "valgrind.log").read_text()[-3000:]
        sys.exit(f"overhead.py: a callgrind worker failed:\n{tail}")
    counts: dict[str, dict[int, int]] = {}
    for dump in folder.glob("cg.out.*"):
        text = dump.read_text()
        trigger = re.search(r"^desc: Trigger: Client Request: (\S+)\|(\d+)$", text, re.M)
        summary = re.search(r"^totals: (\d+)$", text, re.M)
        if trigger and summary:
            counts.setdefault(trigger.group(1), {})[int(trigger.group(2))] = int(summary.group(1))
    per_call = {}
    for key, by_n in counts.items():
        n = max(by_n)
        per_call[key] = (by_n[n] - by_n[0]) / n
    return per_call


def callgrind_counts(plan: dict[str, int], workdir: Path) -> tuple[dict, dict, dict]:
    """Instructions per call: bare, captured, and captured again (the agreement check).
    The three processes run at once: instruction counts do not depend on the load. A
    case's count does depend a little on what ran before it in its process (the heap), so
    the deferred cases run last and the repeat runs the very same plan."""
    call_path = {k: n for k, n in plan.items() if not BY_KEY[k].deferred}
    runs = [(False, call_path, "run-1"), (True, plan, "run-2"), (True, plan, "run-3")]
    procs = [(start_worker(captured, p, workdir / name), workdir / name) for captured, p, name in runs]
    return tuple(read_worker(p, folder) for p, folder in procs)


# -- %load_ext tokmagic in a fresh IPython ---------------------------------------------

_LOAD_EXT = """
import json, sys, time
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
before = set(sys.modules)
t = time.perf_counter()
ip.run_line_magic("load_ext", "tokmagic")
dt = time.perf_counter() - t
heavy = %r
print(json.dumps({"s": dt, "after": [m for m in heavy if m in sys.modules],
                  "before": [m for m in heavy if m in before]}))
""" % (HEAVY,)


_LOAD_EXT_COUNTED = """
import ctypes, mmap
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(bytes.fromhex(%r))
call = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
request = lambda code, arg=0: call((ctypes.c_uint64 * 6)(code, arg, 0, 0, 0, 0))
label = ctypes.create_string_buffer(b"load_ext")
request(%d)
request(%d)
ip.run_line_magic("load_ext", "tokmagic")
request(%d, ctypes.addressof(label))
"""


def _ipython_env(ipython_dir: str) -> dict:
    return {**os.environ, "IPYTHONDIR": ipython_dir,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def start_load_ext_count(folder: Path) -> subprocess.Popen:
    """%load_ext tokmagic in a fresh IPython under callgrind: its instructions, which unlike
    its wall time do not grow with the machine's load (file reads are not counted)."""
    (folder / "ipython").mkdir(parents=True)
    code = _LOAD_EXT_COUNTED % (Callgrind._CODE.hex(), Callgrind.START, Callgrind.ZERO, Callgrind.DUMP_AT)
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
           f"--callgrind-out-file={folder / 'cg.out'}", sys.executable, "-c", code]
    log = open(folder / "valgrind.log", "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(folder),
                            env={**_ipython_env(str(folder / "ipython")), "PYTHONHASHSEED": "0"})


def read_load_ext_count(proc: subprocess.Popen, folder: Path) -> float:
    if proc.wait() != 0:
        return math.nan
    for dump in folder.glob("cg.out.*"):
        text = dump.read_text()
        total = re.search(r"^totals: (\d+)$", text, re.M)
        if re.search(r"^desc: Trigger: Client Request: load_ext$", text, re.M) and total:
            return float(total.group(1))
    return math.nan


def load_ext_times(runs: int) -> tuple[list[float], set, set, str | None]:
    """Seconds that %load_ext tokmagic took in ``runs`` fresh processes, the heavy modules
    present after it and those IPython had already imported; or why it could not run."""
    try:
        import tokmagic.ipython.extension  # noqa: F401
    except ImportError as exc:
        return [], set(), set(), f"tokmagic.ipython not importable ({exc})"
    times, after, before = [], set(), set()
    with tempfile.TemporaryDirectory() as ipython_dir:
        env = _ipython_env(ipython_dir)
        for _ in range(runs):
            out = subprocess.run([sys.executable, "-c", _LOAD_EXT], capture_output=True, text=True,
                                 env=env, cwd=ipython_dir)
            if out.returncode != 0:
                return [], set(), set(), "failed: " + (out.stderr.strip().splitlines() or ["?"])[-1]
            result = json.loads(out.stdout.strip().splitlines()[-1])
            times.append(result["s"])
            after.update(result["after"])
            before.update(result["before"])
    return times, after, before, None


# -- the table -------------------------------------------------------------------------

@dataclass
class Row:
    label: str
    bare_s: float = math.nan
    with_s: float = math.nan
    bare_i: float = math.nan
    with_i: float = math.nan
    target: str = ""          # "us:2", "pct:5", "ms:150", or "" (none)
    note: str = "info"        # the verdict column of a row without a target
    us_per_instr: float = math.nan  # this machine's rate, to judge a µs target on instructions

    @property
    def added_s(self) -> float:
        return self.with_s - (0.0 if math.isnan(self.bare_s) else self.bare_s)

    @property
    def added_i(self) -> float:
        return self.with_i - (0.0 if math.isnan(self.bare_i) else self.bare_i)

    def verdict(self) -> tuple[str, str]:
        """The target as printed, and PASS/FAIL: judged on instructions where they were
        counted (marked *), else on wall time."""
        kind, _, value = self.target.partition(":")
        counted = not math.isnan(self.bare_i) and self.bare_i > 0
        if kind == "us":
            if counted and not math.isnan(self.us_per_instr):
                added_us = self.added_i * self.us_per_instr
                return f"<{value} µs*", _verdict(added_us < float(value))
            return f"<{value} µs", _verdict(self.added_s * 1e6 < float(value))
        if kind == "pct":
            if counted:
                return f"<{value} %*", _verdict(100 * self.added_i / self.bare_i < float(value))
            return f"<{value} %", _verdict(100 * self.added_s / self.bare_s < float(value))
        if kind == "ms":
            if math.isnan(self.with_s):
                return f"<{value} ms", self.note
            return f"<{value} ms", _verdict(self.with_s * 1e3 < float(value))
        return "—", self.note


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _num(x: float, digits: int = 1) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:,.{digits}f}"


def _pct(part: float, whole: float) -> str:
    return "—" if math.isnan(part) or math.isnan(whole) or not whole else f"{100 * part / whole:.2f}"


def print_table(title: str, head: list[str], body: list[list]) -> None:
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]

    def line(cells) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    print(f"\n{title}")
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for cells in body:
        print(line(cells))
    sys.stdout.flush()


def print_rows(title: str, rows: list[Row]) -> None:
    head = ["case", "bare µs", "with-tokmagic µs", "added µs", "ratio %", "bare instr", "added instr",
            "ratio % (instr)", "target", "PASS/FAIL"]
    body = []
    for r in rows:
        target, verdict = r.verdict()
        body.append([r.label, _num(r.bare_s * 1e6, 2), _num(r.with_s * 1e6, 2), _num(r.added_s * 1e6, 2),
                     _pct(r.added_s, r.bare_s), _num(r.bare_i, 0), _num(r.added_i, 0),
                     _pct(r.added_i, r.bare_i), target, verdict])
    print_table(title, head, body)


# -- the run ---------------------------------------------------------------------------

#: Cases counted under callgrind by --quick (the others show wall time only); a full run
#: counts every case.
QUICK_COUNTED = ("x2-get", "x2-post", "oai", "x1-get", "x1-post")
#: The case whose fastest single bare call, over its instructions, gives the machine's rate.
RATE_PROBE = "x2-get"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer iterations; callgrind counts a few core cases only (about a minute)")
    parser.add_argument("--no-callgrind", action="store_true", help="wall time only")
    parser.add_argument("--only", metavar="KEY[,KEY...]", type=_keys,
                        help="run only these cases (their keys: " + ", ".join(BY_KEY) + "), "
                             "each counted under callgrind; leaves out the IPython rows")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a plan file: run under callgrind
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(Path(args.worker).read_text())
        worker(spec["captured"], spec["plan"])
        return

    quick = args.quick
    cases = CASES if args.only is None else [c for c in CASES if c.key in args.only]
    # the µs targets need the machine's rate, measured on the probe case: run it always
    measured = cases if args.only is None or RATE_PROBE in args.only else [BY_KEY[RATE_PROBE], *cases]
    seconds, repeats = (0.02, 3) if quick else (0.3, 9)     # wall: seconds per repeat
    ipython_runs = 3 if quick else 15
    why_not = "--no-callgrind" if args.no_callgrind else callgrind_supported()
    print(f"tokmagic overhead: Python {platform.python_version()}, {platform.machine()}, "
          f"{'quick' if quick else 'full'} run; wall time = best of {repeats} repeats; "
          f"callgrind {'off (' + why_not + ')' if why_not else 'on'}")
    sys.stdout.flush()

    started = time.perf_counter()
    wall, plan = {}, {}
    for case in measured:
        best, _ = wall_times(case, seconds, repeats)
        wall[case.key] = best
        if not quick or case.key in QUICK_COUNTED or args.only is not None:
            plan[case.key] = max(case.calls // 8, 10) if quick else case.calls
    # The fastest of many single bare calls: a call of ~0.1 ms mostly runs within one
    # scheduler slice, so its best time shows the CPU's speed even on a loaded machine,
    # where whole blocks of calls (the table's wall times) are slowed down.
    tokmagic.uninstall()
    probe = BY_KEY[RATE_PROBE].build()
    probe.run(50)
    single = math.inf
    for _ in range(500 if quick else 3000):
        t = time.perf_counter()
        probe.run(1)
        single = min(single, time.perf_counter() - t)
    wall_done = time.perf_counter()

    bare_i, with_i, again_i = {}, {}, {}
    load_ext_i = math.nan
    if not why_not:
        workdir = Path(tempfile.mkdtemp(prefix="tokmagic-callgrind-"))
        try:
            load_ext = None if quick else start_load_ext_count(workdir / "load-ext")
            bare_i, with_i, again_i = callgrind_counts(plan, workdir)
            if load_ext is not None:
                load_ext_i = read_load_ext_count(load_ext, workdir / "load-ext")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    callgrind_done = time.perf_counter()

    # µs per instruction, from the fastest single bare call of the probe case: it turns the
    # added instructions of a row into µs for a µs target
    rate = single * 1e6 / bare_i[RATE_PROBE] if RATE_PROBE in bare_i else math.nan

    def row(key: str) -> Row:
        case = BY_KEY[key]
        return Row(case.label, bare_s=wall[key].get(False, math.nan), with_s=wall[key][True],
                   bare_i=bare_i.get(key, math.nan), with_i=with_i.get(key, math.nan), target=case.target,
                   us_per_instr=rate)

    def chunk_row(short: str, long: str, label: str, target: str) -> Row:
        a, b = row(short), row(long)
        extra = _chunks(long) - _chunks(short)
        return Row(f"{label} (+{extra} chunks)", (b.bare_s - a.bare_s) / extra, (b.with_s - a.with_s) / extra,
                   (b.bare_i - a.bare_i) / extra, (b.with_i - a.with_i) / extra, target, us_per_instr=rate)

    call_rows = []
    for case in cases:
        if case.deferred or not case.label:
            continue
        call_rows.append(row(case.key))
        for short, long, label, target in PER_CHUNK:
            if short == case.key and long in wall:
                call_rows.append(chunk_row(short, long, label, target))
    if call_rows:
        print_rows("On the call path: per call, capture installed vs not (mocked transports and "
                   "connections, no sockets)", call_rows)

    deferred = [row(c.key) for c in cases if c.deferred]
    if deferred:
        from tokmagic.tokens import Counter
        method = Counter("gpt-3.5-turbo-0125").method
        for r in deferred:
            r.note = "off call path"
        print_rows("Off the call path: per record, the work session.records() defers until records are "
                   f"read (warm; estimates with {method})", deferred)
    if args.only is not None:
        _print_method_check(plan, with_i, again_i, rate, single)
        print(f"\ndone in {time.perf_counter() - started:.0f} s (wall {wall_done - started:.0f} s, "
              f"callgrind {callgrind_done - wall_done:.0f} s)")
        return

    times, after, before, failure = load_ext_times(ipython_runs)
    label = "%load_ext tokmagic, fresh IPython"
    if failure:
        ext = [Row(label, target="ms:150", note="not run"), Row("heavy modules imported by it", note="not run")]
        title = f"IPython: {failure}"
    else:
        loaded = sorted(set(after) - set(before))
        ext = [Row(label, with_s=statistics.median(times), with_i=load_ext_i, target="ms:150"),
               Row(f"heavy modules imported by it: {', '.join(loaded) or 'none'}",
                   note=_verdict(not loaded))]
        title = (f"IPython: median of {len(times)} fresh processes (min {min(times) * 1e3:.0f} ms, "
                 f"max {max(times) * 1e3:.0f} ms), judged on wall time"
                 + (f"; its instructions, counted in one more process, are {load_ext_i * rate / 1e3:.0f} "
                    f"ms at the rate below, file reads left out" if not math.isnan(load_ext_i * rate) else "")
                 + f"; heavy = {', '.join(HEAVY)}"
                 + (f"; already imported by IPython itself: {', '.join(sorted(before))}" if before else ""))
    print_rows(title, ext)
    _print_method_check(plan, with_i, again_i, rate, single)
    print(f"\ndone in {time.perf_counter() - started:.0f} s (wall {wall_done - started:.0f} s, "
          f"callgrind {callgrind_done - wall_done:.0f} s)")


def _chunks(key: str) -> int:
    """How many chunks one call of a case streams."""
    bench = BY_KEY[key].build()
    try:
        return bench.chunks
    finally:
        bench.close()


def _keys(text: str) -> list[str]:
    """--only's argument: known case keys, comma-separated."""
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"unknown case key(s) {', '.join(unknown) or '(none)'}; "
                                         f"known: {', '.join(BY_KEY)}")
    return keys


def _print_method_check(plan: dict, with_i: dict, again_i: dict, rate: float, single: float) -> None:
    if with_i:
        body, worst = [], 0.0
        for key, n in plan.items():
            if key in again_i:
                a, b = with_i[key], again_i[key]
                diff = abs(a - b) / a
                worst = max(worst, diff)
                body.append([key, n, _num(a, 0), _num(b, 0), f"{100 * diff:.3f}",
                             f"{100 * AGREEMENT:.1f}", _verdict(diff <= AGREEMENT)])
        body.append(["largest", "", "", "", f"{100 * worst:.3f}", f"{100 * AGREEMENT:.1f}",
                     _verdict(worst <= AGREEMENT)])
        print_table("Method check: two identical captured processes under callgrind, instructions per call",
                    ["case", "calls", "run 1", "run 2", "diff %", "limit %", "PASS/FAIL"], body)
        print(f"\n* judged on instructions: the added instructions as a ratio of the bare call's, or "
              f"turned into µs at this machine's rate: {rate * 1e3:.3f} ns per instruction, the fastest of "
              f"many single bare calls of {RATE_PROBE} ({single * 1e6:.1f} µs) over its instructions")


if __name__ == "__main__":
    main()
