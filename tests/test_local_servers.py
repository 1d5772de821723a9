"""Local model servers cost nothing, by declaration rather than by price list: Ollama's
native API anywhere but Ollama's cloud, anything on Ollama's default port 11434 on this
machine (its OpenAI-compatible API too), and any server the user declares free with
``tokmagic.set_provider(host, name, free=True)``. A hosted model no price list knows is
not free: it costs NaN, with a warning naming it, and summaries count it as unpriced."""
from __future__ import annotations

import asyncio
import json
import math
import urllib.parse
import warnings

import ollama
import openai
import pytest

import tokmagic
import tokmagic.warn
from tokmagic import providers
from tokmagic.warn import TokmagicWarning

from . import sdk
from .conftest import load_case, load_own
from .expect import inclusive, only_record, tokens_of

@pytest.fixture(autouse=True)
def fresh_declarations(monkeypatch):
    """Each test starts with tokmagic's own declarations only, and no warning given yet."""
    monkeypatch.setattr(providers, "_declared", {})
    monkeypatch.setattr(providers, "_free", set(providers._free))
    monkeypatch.setattr(tokmagic.warn, "_seen", set())


def price_warnings(caught: list, model: str) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, TokmagicWarning) and model in str(w.message)]


def read_one(model: str):
    """The only record, read (so priced) while collecting the price warnings about ``model``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = only_record()
    return record, price_warnings(caught, model)


def ollama_call(case: dict, base: str, host: str, is_async: bool = False) -> None:
    """The case's native call through the ollama SDK, aimed at ``host`` and routed to ``base``."""
    body = case["request"]["body"]
    method = {"ollama_chat": "chat", "ollama_generate": "generate"}[case["api"]]
    kwargs = {"headers": {"X-Replay-Case": case["id"]}}
    if is_async:
        async def go():
            async with ollama.AsyncClient(host=host, transport=sdk.HttpxAsyncRouteTransport(base), **kwargs) as c:
                result = await getattr(c, method)(**body)
                if body.get("stream"):
                    [part async for part in result]
        asyncio.run(go())
        return
    with ollama.Client(host=host, transport=sdk.HttpxRouteTransport(base), **kwargs) as c:
        result = getattr(c, method)(**body)
        if body.get("stream"):
            list(result)


def openai_chat(case: dict, base: str, host: str | None) -> None:
    """The case's chat call through the openai SDK, aimed at ``host`` (routed to ``base``)
    or, with ``host`` None, at ``base`` itself."""
    headers = {"X-Replay-Case": case["id"]}
    if host is None:
        client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, default_headers=headers)
    else:
        client = openai.OpenAI(base_url=f"http://{host}/v1", api_key="x", max_retries=0, default_headers=headers,
                               http_client=openai.DefaultHttpxClient(transport=sdk.RouteTransport(base)))
    with client:
        result = client.chat.completions.create(**case["request"]["body"])
        if case["request"]["body"].get("stream"):
            list(result)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("host", ["http://localhost:11434", "http://127.0.0.1:11434", "http://gpu-box.lan:11434",
                                  "http://gpu-box.lan:8080"])
@pytest.mark.parametrize("case_id", ["ollama-native-chat", "ollama-native-chat-stream", "ollama-native-generate"])
def test_native_ollama_calls_are_free(replay, case_id, host, is_async):
    """Ollama's native API, on this machine or another, at its default port or not: the
    provider's exact counts, provider "ollama", cost 0 and no price warning."""
    case = load_case(case_id)
    ollama_call(case, replay, host, is_async)
    record, warned = read_one(case["expected"]["model"])
    assert (record.provider, record.host) == ("ollama", host.removeprefix("http://"))
    assert tokens_of(record) == inclusive(case) and record.usage.input_tokens > 0
    assert record.cost_usd == 0.0 and warned == []
    s = tokmagic.summary()
    assert (s.cost_usd, s.unpriced, s.calls) == (0.0, 0, 1)


def test_ollama_cloud_is_not_free(replay):
    """The same native API on Ollama's cloud (ollama.com) is a hosted service: not free;
    a model no price list knows costs NaN with one warning naming it, never 0."""
    case = load_case("ollama-native-chat")
    ollama_call(case, replay, "https://ollama.com")
    record, warned = read_one(case["expected"]["model"])
    assert record.provider == "ollama-cloud"
    assert tokens_of(record) == inclusive(case)
    assert math.isnan(record.cost_usd) and len(warned) == 1
    s = tokmagic.summary()
    assert (s.cost_usd, s.unpriced) == (0.0, 1)
    assert "1 unpriced call" in str(s)


@pytest.mark.parametrize("host", ["localhost:11434", "127.0.0.1:11434"])
@pytest.mark.parametrize("case_id", ["ollama-openai-chat", "ollama-openai-chat-stream"])
def test_openai_compatible_on_ollamas_port_is_ollama_and_free(serve_cases, case_id, host):
    case = load_own(case_id)
    openai_chat(case, serve_cases([case]), host)
    record, warned = read_one(case["expected"]["model"])
    assert (record.provider, record.api, record.model) == ("ollama", "chat", case["expected"]["model"])
    assert tokens_of(record) == inclusive(case)
    assert record.cost_usd == 0.0 and warned == []


def test_undeclared_local_server_is_unpriced_not_free(serve_cases):
    """An OpenAI-compatible server on another port is not known to be local and free: it
    is named after the wire format it speaks, and its model, which no price list knows,
    costs NaN with a warning (the user declares it with set_provider)."""
    case = load_own("ollama-openai-chat")
    openai_chat(case, serve_cases([case]), None)
    record, warned = read_one(case["expected"]["model"])
    assert record.provider == "openai"
    assert tokens_of(record) == inclusive(case)
    assert math.isnan(record.cost_usd) and len(warned) == 1
    assert tokmagic.summary().unpriced == 1


@pytest.mark.parametrize("spelling", ["host:port", "host"])
def test_set_provider_declares_a_local_server_free(serve_cases, spelling):
    """``tokmagic.set_provider("127.0.0.1:PORT", "vllm", free=True)``: the server's calls
    are named "vllm", keep their exact counts and cost 0, with no price warning."""
    case = load_own("ollama-openai-chat")
    base = serve_cases([case])
    netloc = urllib.parse.urlsplit(base).netloc
    tokmagic.set_provider(netloc if spelling == "host:port" else netloc.rsplit(":", 1)[0], "vllm", free=True)
    openai_chat(case, base, None)
    record, warned = read_one(case["expected"]["model"])
    assert (record.provider, record.host) == ("vllm", netloc)
    assert tokens_of(record) == inclusive(case)
    assert record.cost_usd == 0.0 and warned == []
    s = tokmagic.summary()
    assert (s.cost_usd, s.unpriced) == (0.0, 0)


def test_set_provider_without_free_still_prices(serve_cases):
    """Naming a server is not declaring it free: an unknown model on it costs NaN."""
    case = load_own("ollama-openai-chat")
    base = serve_cases([case])
    tokmagic.set_provider(urllib.parse.urlsplit(base).netloc, "vllm")
    openai_chat(case, base, None)
    record, warned = read_one(case["expected"]["model"])
    assert record.provider == "vllm"
    assert math.isnan(record.cost_usd) and len(warned) == 1


@pytest.mark.parametrize("host,provider", [("api.together.xyz", "together"), ("api.groq.com/openai", "groq"),
                                           ("openrouter.ai/api", "openrouter")])
def test_unknown_hosted_model_costs_nan(serve_cases, host, provider):
    """A hosted provider's call naming a model no price list knows: exact tokens, cost NaN
    (never 0) with one warning naming the model, counted as unpriced in the summary."""
    unknown = "acme/unreleased-70b-instruct"
    case = json.loads(json.dumps(load_own("ollama-openai-chat")).replace("llama3.2", unknown))
    openai_chat(case, serve_cases([case]), host)
    record, warned = read_one(unknown)
    assert (record.provider, record.model) == (provider, unknown)
    assert tokens_of(record) == inclusive(case) and record.usage.input_tokens > 0
    assert math.isnan(record.cost_usd) and len(warned) == 1
    assert math.isnan(tokmagic.usage().iloc[0]["cost_usd"])
    s = tokmagic.summary()
    assert (s.cost_usd, s.unpriced) == (0.0, 1)
    assert s.usage.input_tokens == record.usage.input_tokens  # not dropped from the totals


def test_naming_another_host_ollama_keeps_ollama_free():
    tokmagic.set_provider("gpu-box.lan:11434", "ollama")
    assert providers.is_free("ollama") and providers.provider_for("gpu-box.lan:11434", "/v1/chat/completions", "openai") == "ollama"
    tokmagic.set_provider("paid-box.lan", "ollama", free=False)
    assert not providers.is_free("ollama")


@pytest.mark.parametrize("host, provider", [("", "vllm"), (None, "vllm"), ("box:8000", ""), ("box:8000", 3)])
def test_set_provider_refuses_what_is_no_name(host, provider):
    with pytest.raises(TypeError, match="non-empty strings"):
        tokmagic.set_provider(host, provider)
