"""Capture through urllib3 (directly and under requests) and aiohttp, with the real
libraries against the replay server, as recorded and as gzip with streams cut at random
bytes: each call leaves exactly one record with the provider's numbers, and what the
user code gets is the same with and without tokmagic."""
from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import textwrap
import zlib

import aiohttp
import pytest
import requests
import urllib3

import tokmagic
from tokmagic.capture import aiohttp as aiohttp_capture
from tokmagic.capture import urllib3 as urllib3_capture
from tokmagic.monitor import session

from .conftest import load_case

CASES = ["openai-chat-basic", "openai-chat-stream-include-usage", "anthropic-messages-stream",
         "openai-chat-stream-no-usage", "openai-chat-stream-truncated", "openai-chat-error-400"]
TOKEN_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
                "reasoning_tokens")


def _request(base: str, case: dict) -> tuple[str, bytes, dict]:
    headers = {"Content-Type": "application/json", "X-Replay-Case": case["id"],
               "Accept-Encoding": "gzip"}
    return base + case["request"]["path"], json.dumps(case["request"]["body"]).encode(), headers


def _is_json(case: dict) -> bool:
    return not (case["request"]["body"] or {}).get("stream")


# -- the user code: each returns what it got (status, items, name of the exception) -----

def requests_whole(base, case):
    url, body, headers = _request(base, case)
    try:
        r = requests.post(url, data=body, headers=headers)
    except requests.RequestException as exc:
        return None, [], type(exc).__name__
    return r.status_code, [r.json() if _is_json(case) else r.content], None


def requests_lines(base, case):
    url, body, headers = _request(base, case)
    lines = []
    try:
        with requests.post(url, data=body, headers=headers, stream=True) as r:
            for line in r.iter_lines():
                lines.append(line)
    except requests.RequestException as exc:
        return r.status_code, lines, type(exc).__name__
    return r.status_code, lines, None


def _urllib3_stream(base, case, decode):
    url, body, headers = _request(base, case)
    with urllib3.PoolManager() as pool:
        r = pool.request("POST", url, body=body, headers=headers, preload_content=False)
        chunks = []
        try:
            for chunk in r.stream(64, decode_content=decode):
                chunks.append(chunk)
        except urllib3.exceptions.HTTPError as exc:
            return r.status, chunks, type(exc).__name__
        finally:
            r.release_conn()
    return r.status, chunks, None


def urllib3_stream(base, case):
    return _urllib3_stream(base, case, True)


def urllib3_raw(base, case):
    """Compressed bytes as they came: tokmagic must decode its own copy."""
    status, chunks, error = _urllib3_stream(base, case, False)
    if chunks and chunks[0][:2] == b"\x1f\x8b":
        chunks = [zlib.decompressobj(31).decompress(b"".join(chunks))]
    return status, chunks, error


def urllib3_preloaded(base, case):
    url, body, headers = _request(base, case)
    with urllib3.PoolManager() as pool:
        try:
            r = pool.request("POST", url, body=body, headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            return None, [], type(exc).__name__
    return r.status, [r.json() if _is_json(case) else r.data], None


def _aiohttp(read):
    def run(base, case):
        async def go():
            url, body, headers = _request(base, case)
            items = []
            async with aiohttp.ClientSession() as s:
                async with s.post(url, json=case["request"]["body"], headers=headers) as resp:
                    try:
                        await read(resp, items, case)
                    except aiohttp.ClientError as exc:
                        return resp.status, items, type(exc).__name__
                    return resp.status, items, None
        return asyncio.run(go())
    run.__name__ = f"aiohttp_{read.__name__}"
    return run


async def whole(resp, items, case):
    items.append(await resp.json() if _is_json(case) else await resp.read())


async def lines(resp, items, case):
    async for line in resp.content:
        items.append(line)


async def chunked(resp, items, case):
    async for chunk in resp.content.iter_chunked(64):
        items.append(chunk)


CLIENTS = [requests_whole, requests_lines, urllib3_stream, urllib3_raw, urllib3_preloaded,
           _aiohttp(whole), _aiohttp(lines), _aiohttp(chunked)]


def _joined(items: list) -> object:
    """Items as the user code saw them, with the network's cuts of a stream ignored."""
    return b"".join(items) if items and isinstance(items[0], bytes) else items


def inclusive(case: dict) -> dict:
    """The expected usage in tokmagic's convention (Anthropic's input counts cache reads
    and writes)."""
    e = case["expected"]
    n = {f: e.get(f) or 0 for f in TOKEN_FIELDS}
    if case["api"] == "messages":
        n["input_tokens"] += n["cached_input_tokens"] + n["cache_write_tokens"]
    return n


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case_id", CASES)
def test_one_record_per_call_and_the_user_sees_the_same(replay, case_id, client):
    case = load_case(case_id)
    e = case["expected"]
    seen = client(replay, case)
    records = session.records()
    assert len(records) == 1, [(r.status, r.error) for r in records]
    record = records[0]
    assert record.api == case["api"] and record.host == replay.removeprefix("http://")
    cut_preloaded = client is urllib3_preloaded and (case.get("replay") or {}).get("truncated")
    # a preloaded body is read whole or not at all: one cut short never gave its model
    assert record.model == (case["request"]["body"]["model"] if cut_preloaded else e["model"])
    if record.status != "error":
        assert record.stream is not _is_json(case)

    if case["response"]["status"] >= 400:
        assert record.status == "error" and record.http_status == case["response"]["status"]
        assert all(getattr(record.usage, f) == 0 for f in TOKEN_FIELDS)
    elif (case.get("replay") or {}).get("truncated"):
        assert seen[2] is not None  # the user's read raised
        assert record.status == "interrupted" and record.estimated and record.error
        assert record.http_status == 200 and record.usage.input_tokens > 0
        assert record.usage.output_tokens > 0 or cut_preloaded
    elif e["usage_reported"]:
        assert record.status == "ok" and not record.estimated
        assert {f: getattr(record.usage, f) for f in TOKEN_FIELDS} == inclusive(case)
    else:
        assert record.status == "ok" and record.estimated
        assert record.usage.input_tokens > 0 and record.usage.output_tokens > 0
    if record.stream and record.status == "ok":
        assert 0 < record.ttft_s <= record.latency_s

    tokmagic.uninstall()
    try:
        plain = client(replay, case)
    finally:
        tokmagic.install()
    assert len(session.records()) == 1  # nothing recorded while uninstalled
    assert (seen[0], _joined(seen[1]), seen[2]) == (plain[0], _joined(plain[1]), plain[2])


# -- a stream the user leaves early ------------------------------------------------

def _leave_requests(base, case):
    url, body, headers = _request(base, case)
    with requests.post(url, data=body, headers=headers, stream=True) as r:
        for line in r.iter_lines():
            if line:
                return line


def _leave_urllib3(base, case):
    url, body, headers = _request(base, case)
    with urllib3.PoolManager() as pool:
        r = pool.request("POST", url, body=body, headers=headers, preload_content=False)
        first = b""
        for chunk in r.stream(32):
            first += chunk
            if b"\n\n" in first:  # the first event (message_start) is in
                break
        r.close()
        return first


def _leave_aiohttp(base, case):
    async def go():
        url, _, headers = _request(base, case)
        async with aiohttp.ClientSession() as s:
            async with s.post(url, json=case["request"]["body"], headers=headers) as resp:
                async for line in resp.content:
                    return line
    return asyncio.run(go())


@pytest.mark.parametrize("leave", [_leave_requests, _leave_urllib3, _leave_aiohttp],
                         ids=["requests", "urllib3", "aiohttp"])
def test_a_stream_left_early_is_one_interrupted_record(serve_cases, leave):
    case = load_case("anthropic-messages-stream")
    base = serve_cases([case], event_delay_ms=20)  # the stream is still coming when left
    assert leave(base, case)
    (record,) = session.records()
    assert record.status == "interrupted" and record.error == "ClosedEarly"
    assert record.usage.input_tokens == case["expected"]["input_tokens"]  # from message_start
    assert not aiohttp_capture._watched


def test_an_error_response_released_unread_is_an_error(replay):
    """aiohttp's raise_for_status releases the response before its body is read."""
    case = load_case("openai-chat-error-400")

    async def go():
        url, _, headers = _request(replay, case)
        async with aiohttp.ClientSession() as s:
            resp = await s.post(url, json=case["request"]["body"], headers=headers)
            with pytest.raises(aiohttp.ClientResponseError):
                resp.raise_for_status()
        with pytest.raises(aiohttp.ClientResponseError):
            async with aiohttp.ClientSession(raise_for_status=True) as s:
                await s.post(url, json=case["request"]["body"], headers=headers)
    asyncio.run(go())
    records = session.records()
    assert [(r.status, r.http_status) for r in records] == [("error", 400), ("error", 400)]


@pytest.mark.filterwarnings("ignore:Unclosed:ResourceWarning")
def test_an_abandoned_aiohttp_response_leaves_no_entry(serve_cases):
    """A response neither read nor closed: its entry goes when it is collected."""
    case = load_case("openai-chat-stream-include-usage")
    base = serve_cases([case], event_delay_ms=20)

    async def go():
        url, _, headers = _request(base, case)
        async with aiohttp.ClientSession() as s:
            resp = await s.post(url, json=case["request"]["body"], headers=headers)
            assert aiohttp_capture._watched
            del resp
    asyncio.run(go())
    gc.collect()
    assert not aiohttp_capture._watched
    (record,) = session.records()
    assert record.status == "interrupted"


def test_aiohttp_without_auto_decompress(replay):
    """The body comes to the caller (and to tokmagic) as sent: tokmagic decodes its copy."""
    case = load_case("openai-chat-stream-include-usage")

    async def go():
        url, _, headers = _request(replay, case)
        async with aiohttp.ClientSession(auto_decompress=False) as s:
            async with s.post(url, json=case["request"]["body"], headers=headers) as resp:
                return resp.headers.get("Content-Encoding"), await resp.read()
    encoding, body = asyncio.run(go())
    assert (body[:2] == b"\x1f\x8b") is (encoding == "gzip")
    (record,) = session.records()
    assert record.status == "ok"
    assert {f: getattr(record.usage, f) for f in TOKEN_FIELDS} == inclusive(case)


# -- what is not an LLM call -------------------------------------------------------

def test_other_requests_leave_no_record(replay):
    requests.get(replay + "/v1/models").content
    requests.post(replay + "/upload", data=b"x").content
    with urllib3.PoolManager() as pool:
        pool.request("GET", replay + "/v1/chat/completions")

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.get(replay + "/v1/models") as resp:
                await resp.read()
            async with s.post(replay + "/upload", data=b"x") as resp:
                await resp.read()
    asyncio.run(go())
    assert session.records() == []
    assert not aiohttp_capture._watched


# -- patching ----------------------------------------------------------------------

def _wrapped() -> dict[str, bool]:
    mark = "__tokmagic_original__"
    methods = {"_make_request": urllib3.connectionpool.HTTPConnectionPool, "_request": aiohttp.ClientSession}
    wrapped = {name: hasattr(cls.__dict__[name], mark) for name, cls in methods.items()}
    # response and reader classes are never patched: an LLM response's objects take
    # watching subclasses, made at install
    assert not hasattr(urllib3.response.HTTPResponse.__dict__["read"], mark)
    assert not hasattr(aiohttp.StreamReader.__dict__["feed_data"], mark)
    assert not hasattr(aiohttp.ClientResponse.__dict__["release"], mark)
    wrapped["aiohttp subclasses"] = {aiohttp.StreamReader, aiohttp.ClientResponse} <= aiohttp_capture._subclasses.keys()
    wrapped["urllib3 subclasses"] = urllib3.response.HTTPResponse in urllib3_capture._subclasses
    return wrapped


def test_install_and_uninstall_are_mirror_images():
    assert all(_wrapped().values())
    before = urllib3.response.HTTPResponse.__dict__["read"]
    tokmagic.install()  # a second install changes nothing
    assert urllib3.response.HTTPResponse.__dict__["read"] is before
    tokmagic.uninstall()
    tokmagic.uninstall()
    try:
        assert not any(_wrapped().values())
    finally:
        tokmagic.install()
    assert all(_wrapped().values())


def test_uninstall_leaves_a_wrapper_put_over_ours():
    ours = aiohttp.StreamReader.__dict__["feed_data"]

    def theirs(self, data, size=0):
        return ours(self, data, size)

    aiohttp.StreamReader.feed_data = theirs
    try:
        tokmagic.uninstall()
        assert aiohttp.StreamReader.__dict__["feed_data"] is theirs
    finally:
        aiohttp.StreamReader.feed_data = ours
        tokmagic.install()


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_libraries_are_patched_when_imported_after_install_and_not_imported_by_it():
    result = _run("""
        import json, sys, tokmagic
        tokmagic.install()
        loaded = [m for m in ("urllib3", "requests", "aiohttp") if m in sys.modules]
        import requests, aiohttp
        mark = "__tokmagic_original__"
        print(json.dumps([loaded,
            hasattr(sys.modules["urllib3"].connectionpool.HTTPConnectionPool._make_request, mark),
            hasattr(aiohttp.ClientSession._request, mark)]))
    """)
    assert result == [[], True, True]


def test_boto3_imports_and_makes_clients_with_capture_installed(replay):
    """Bedrock is a later step; botocore (urllib3 underneath) must simply keep working."""
    result = _run(f"""
        import json, tokmagic
        tokmagic.install()
        import boto3, botocore.exceptions
        client = boto3.client("s3", region_name="us-east-1", endpoint_url={replay!r},
                              aws_access_key_id="x", aws_secret_access_key="y")
        try:
            client.list_buckets()
            outcome = "ok"
        except botocore.exceptions.ClientError as exc:
            outcome = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        print(json.dumps([outcome, len(tokmagic.session.records())]))
    """)
    assert result == [404, 0]
