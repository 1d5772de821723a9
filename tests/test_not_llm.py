"""A POST to a path that LLM APIs use (/api/chat, /v1/messages, /chat/completions ...) is
not always an LLM call: a web app's own endpoint, asked something that is no request of
that format and answering something that is no answer of it, leaves no record. A real
LLM request keeps its row whatever comes back, and an answer that cannot be read says
why, once. Driven through requests, httpx and aiohttp against a local server."""
from __future__ import annotations

import asyncio
import warnings

import aiohttp
import httpx
import pytest
import requests

import tokmagic
from tokmagic.monitor import session
from tokmagic.warn import TokmagicWarning


def _case(case_id: str, path: str, request: dict, status: int, body, ctype: str = "application/json") -> dict:
    response = {"status": status, "headers": {"content-type": ctype}, "stream_format": None, "sse": None}
    if isinstance(body, str):  # a body that is not JSON: served as recorded text
        response.update(body=None, sse=body, stream_format=None)
    else:
        response["body"] = body
    return {"id": case_id, "provider": "", "api": "", "request": {"method": "POST", "path": path, "body": request},
            "response": response}


def _post(library: str, url: str, case_id: str, body: dict) -> int:
    headers = {"X-Replay-Case": case_id}
    if library == "requests":
        return requests.post(url, json=body, headers=headers).status_code
    if library == "httpx":
        return httpx.post(url, json=body, headers=headers).status_code

    async def go() -> int:
        async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers) as r:
            await r.read()
            return r.status
    return asyncio.run(go())


LIBRARIES = ["requests", "httpx", "aiohttp"]

#: A web app's own endpoints on LLM-looking paths: (path, request, status, answer).
WEB_APP = {
    "app-chat": ("/api/chat", {"message": "hello"}, 200, {"ok": True}),
    "app-sms": ("/v1/messages", {"text": "hi", "model": "sms"}, 200, {"sent": True}),
    "app-completions": ("/chat/completions", {"query": "x"}, 404, {"detail": "Not Found"}),
    "app-generate-html": ("/api/generate", {"page": 1}, 200, "<html>ok</html>"),
}


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("name", sorted(WEB_APP))
def test_a_web_apps_own_endpoint_is_no_llm_call(serve_cases, fresh_warnings, library, name):
    path, request, status, answer = WEB_APP[name]
    base = serve_cases([_case(name, path, request, status, answer, "text/html" if isinstance(answer, str) else "application/json")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _post(library, base + path, name, request) == status
        assert session.records() == [] and len(tokmagic.usage()) == 0
    assert [w for w in caught if issubclass(w.category, TokmagicWarning)] == []


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("library", LIBRARIES)
def test_an_llm_request_keeps_its_row_whatever_the_answer(serve_cases, fresh_warnings, library):
    base = serve_cases([_case("bad-gateway", "/v1/chat/completions", CHAT, 502, "<html>bad gateway</html>", "text/html"),
                        _case("not-json", "/v1/chat/completions", CHAT, 200, "<html>maintenance</html>", "text/html")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _post(library, base + "/v1/chat/completions", "bad-gateway", CHAT)
        _post(library, base + "/v1/chat/completions", "not-json", CHAT)
        rows = [(r.status, r.http_status, r.error, r.model) for r in session.records()]
    assert rows == [("error", 502, None, "gpt-4o-mini"), ("unparsed", 200, "not JSON", "gpt-4o-mini")]
    said = [str(w.message) for w in caught if issubclass(w.category, TokmagicWarning)]
    assert len([m for m in said if "could not be read (not JSON)" in m]) == 1


def test_a_junk_count_in_a_whole_answer_is_named_once(serve_cases, fresh_warnings):
    answer = {"id": "x", "object": "chat.completion", "model": "gpt-4o-mini", "choices": [],
              "usage": {"prompt_tokens": -5, "completion_tokens": 3}}
    base = serve_cases([_case("neg", "/v1/chat/completions", CHAT, 200, answer)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            _post("requests", base + "/v1/chat/completions", "neg", CHAT)
        records = session.records()
    assert [(r.status, r.error) for r in records] == [("unparsed", "not a token count: -5")] * 2
    said = [str(w.message) for w in caught if issubclass(w.category, TokmagicWarning)]
    assert len(said) == 1 and "not a token count: -5" in said[0]


def test_a_model_that_is_no_name_is_no_model(serve_cases, fresh_warnings):
    answer = {"id": "x", "object": "chat.completion", "model": 12345, "choices": [],
              "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
    base = serve_cases([_case("int-model", "/v1/chat/completions", CHAT, 200, answer)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _post("requests", base + "/v1/chat/completions", "int-model", CHAT)
        (record,) = session.records()
    assert (record.status, record.model, record.usage.input_tokens) == ("ok", "gpt-4o-mini", 5)
    assert not [w for w in caught if "Please report" in str(w.message)]
