"""The LLM frameworks people call instead of the SDKs (LiteLLM, LangChain, LlamaIndex),
real and unmodified, against the corpus replay server. They stack their own clients on
the HTTP libraries (LiteLLM's async calls go through httpx *and* aiohttp), so each call
must still leave exactly ONE record, never one per layer, carrying the case's usage in
tokmagic's inclusive convention, and the framework must hand back the same thing with
and without tokmagic. An answer a framework serves from its own cache made no HTTP call,
so it leaves no record."""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import re
import sys
import types
from typing import Any, Callable

import pytest

import tokmagic
from tokmagic.monitor import session

from . import expect
from .conftest import bug_cases, load_bug, load_case
from .expect import inclusive, tokens_of

#: Ids and timestamps a framework makes up itself on every call: the only parts of its
#: answers that may differ between two runs.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def plain(value: Any, volatile: frozenset[str] = frozenset()) -> Any:
    """``value`` as plain data, with made-up ids masked and the ``volatile`` keys dropped."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, dict):
        return {k: plain(v, volatile) for k, v in value.items() if k not in volatile}
    if isinstance(value, (list, tuple)):
        return [plain(v, volatile) for v in value]
    if isinstance(value, str):
        return _UUID.sub("<uuid>", value)
    return value


def without_then_with(fn: Callable[[], Any]) -> tuple[Any, Any]:
    """``fn()`` with tokmagic uninstalled (it must record nothing), then installed."""
    tokmagic.uninstall()
    try:
        session.reset()
        off = fn()
        assert session.records() == []
    finally:
        tokmagic.install()
    session.reset()
    return off, fn()


def headers(case_id: str) -> dict[str, str]:
    return {"X-Replay-Case": case_id}


def prompt(case: dict) -> str:
    """The text of the case's first user message."""
    content = case["request"]["body"]["messages"][0]["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def model_of(case: dict) -> str:
    return case["request"]["body"]["model"]


def check_exact(case: dict) -> None:
    """One record for the one HTTP exchange, with the usage the provider reported."""
    records = session.records()
    assert len(records) == 1, [(r.api, r.status, r.model, r.host) for r in records]
    [r] = records
    assert r.status == "ok" and r.estimated is False
    assert r.provider == case["provider"] and r.model == case["expected"]["model"]
    assert r.stream is bool(case["request"]["body"].get("stream"))
    assert tokens_of(r) == inclusive(case)
    expect.check_cost(case, r)


@pytest.fixture(scope="module")
def aio():
    """Runs a coroutine on the module's one event loop, as a notebook runs every cell's
    on one: frameworks keep async clients from call to call (LangChain one per base URL,
    process-wide), and those only work on the loop they were first used on."""
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@contextlib.contextmanager
def counting(cls: type, name: str):
    """Count the calls to ``cls.name`` (wrapping whatever is there, tokmagic's wrapper
    included), to show which layers a framework's request went through."""
    original = cls.__dict__[name]
    calls = []

    async def wrapper(*args, **kwargs):
        calls.append(name)
        return await original(*args, **kwargs)

    setattr(cls, name, wrapper)
    try:
        yield calls
    finally:
        setattr(cls, name, original)


# -- LiteLLM ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def litellm():
    """LiteLLM, imported offline: its price map from the wheel, and tiktoken's cache dir
    left as the other tests set it (importing litellm points it at litellm's own)."""
    before = {k: os.environ.get(k) for k in ("TIKTOKEN_CACHE_DIR", "CUSTOM_TIKTOKEN_CACHE_DIR")}
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    if before["TIKTOKEN_CACHE_DIR"]:
        os.environ["CUSTOM_TIKTOKEN_CACHE_DIR"] = before["TIKTOKEN_CACHE_DIR"]
    try:
        import litellm
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    litellm.suppress_debug_info = True
    return litellm


#: LiteLLM makes up the id and creation time of the answers it translates (Anthropic's).
LITELLM_VOLATILE = frozenset({"created"})
LITELLM_CASES = ["openai-chat-basic", "openai-chat-stream-include-usage", "anthropic-messages-basic",
                 "anthropic-messages-stream", "anthropic-messages-cache-read",
                 "anthropic-messages-stream-cache-write"]


def litellm_call(litellm, case: dict, base: str, aio: Callable | None = None, **options) -> Any:
    """``litellm.completion`` (or ``acompletion``, run by ``aio``) of the case, as plain
    data: the response, or every chunk of a stream."""
    vendor = "anthropic" if case["api"] == "messages" else "openai"
    kwargs = {"model": f"{vendor}/{model_of(case)}", "api_key": "x",
              "api_base": base if vendor == "anthropic" else base + "/v1",
              "messages": [{"role": "user", "content": prompt(case)}],
              "extra_headers": headers(case["id"]), **options}
    if case["request"]["body"].get("stream"):
        kwargs.update(stream=True, stream_options={"include_usage": True})
    if aio is None:
        result = litellm.completion(**kwargs)
        return plain(list(result) if kwargs.get("stream") else result, LITELLM_VOLATILE)

    async def go():
        result = await litellm.acompletion(**kwargs)
        if kwargs.get("stream"):
            result = [chunk async for chunk in result]
        return plain(result, LITELLM_VOLATILE)
    return aio(go())


@pytest.mark.parametrize("is_async", [False, True], ids=["completion", "acompletion"])
@pytest.mark.parametrize("case_id", LITELLM_CASES)
def test_litellm(replay, litellm, aio, case_id, is_async):
    case = load_case(case_id)
    off, on = without_then_with(lambda: litellm_call(litellm, case, replay, aio if is_async else None))
    assert on == off
    check_exact(case)
    usage = on[-1]["usage"] if isinstance(on, list) else on["usage"]
    # LiteLLM's own usage is inclusive too: it must agree with the record
    record = session.records()[0]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
        record.usage.input_tokens, record.usage.output_tokens)


def test_litellm_async_is_one_record_through_two_layers(replay, litellm, aio):
    """LiteLLM's async client is httpx over an aiohttp transport: both are captured, the
    request passes both, and it is recorded once."""
    import aiohttp
    import httpx

    case = load_case("anthropic-messages-stream")
    with counting(httpx.AsyncClient, "send") as outer, counting(aiohttp.ClientSession, "_request") as inner:
        litellm_call(litellm, case, replay, aio)
    assert outer and inner
    check_exact(case)


@pytest.fixture
def litellm_cache_hits(litellm, monkeypatch):
    """LiteLLM 1.110 serves a cache hit only after an isinstance test against a class of
    its proxy server's modules, which need the proxy's extras (fastapi, soundfile, ...);
    without them every hit raises ModuleNotFoundError, tokmagic or not. A stand-in
    class lets the hit be served as a plain (non-stream) answer, as it is with the extras."""
    name = "litellm.llms.anthropic.messages.native.response_cache"
    try:
        importlib.import_module(name)
    except ImportError:
        stand_in = types.ModuleType(name)
        stand_in.CachedAnthropicMessagesStreamIterator = type("CachedAnthropicMessagesStreamIterator", (), {})
        monkeypatch.setitem(sys.modules, name, stand_in)


@pytest.mark.parametrize("case_id", ["openai-chat-basic", "anthropic-messages-basic"])
def test_litellm_cache_hit_is_no_call(replay, litellm, litellm_cache_hits, case_id):
    """An answer from LiteLLM's in-memory cache is not a call: two completions, one record."""
    case = load_case(case_id)

    def twice():
        litellm.cache = litellm.Cache(type="local")
        try:
            return [litellm_call(litellm, case, replay, caching=True) for _ in range(2)]
        finally:
            litellm.disable_cache()

    off, on = without_then_with(twice)
    assert on == off
    check_exact(case)


def test_litellm_azure_deployment(serve_cases, litellm):
    """Bug 08 through LiteLLM's Azure route: the record names the deployment, and the
    model it is mapped to prices it."""
    bug = load_bug("08")
    base = serve_cases(bug_cases(bug))
    exp = bug["expected"]
    call = {"model": "azure/gpt4-turbo-eval", "api_base": base, "api_version": "2024-02-01", "api_key": "x",
            "messages": bug["exchanges"][0]["request"]["body"]["messages"]}
    off, on = without_then_with(lambda: plain(litellm.completion(**call), LITELLM_VOLATILE))
    assert on == off
    tokmagic.set_price("gpt-4-turbo-2024-04-09", **exp["price_fixture_usd_per_mtok"]["gpt-4-turbo-2024-04-09"])
    tokmagic.set_deployment("gpt4-turbo-eval", "gpt-4-turbo-2024-04-09")
    try:
        [r] = session.records()
    finally:
        tokmagic.clear_prices()
    per_call = exp["per_call"][0]
    assert (r.provider, r.deployment, r.model) == (per_call["provider"], per_call["deployment"],
                                                   per_call["reported_model"])
    assert (r.usage.input_tokens, r.usage.output_tokens) == (per_call["input_tokens"], per_call["output_tokens"])
    assert r.cost_usd == pytest.approx(exp["expected_cost_usd_with_mapping"], rel=1e-9)


# -- LangChain --------------------------------------------------------------------------

def langchain_model(case: dict, base: str, **options):
    if case["api"] == "messages":
        from langchain_anthropic import ChatAnthropic

        return ChatAnthropic(base_url=base, api_key="x", model=model_of(case),
                             default_headers=headers(case["id"]), **options)
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=base + "/v1", api_key="x", model=model_of(case),
                      default_headers=headers(case["id"]), **options)


def langchain_call(case: dict, base: str, method: str, aio: Callable | None = None, **options) -> Any:
    """``invoke``/``stream`` (or ``ainvoke``/``astream``, run by ``aio``) of the case, as
    plain data."""
    model = langchain_model(case, base, **options)
    text = prompt(case)
    if method == "invoke":
        return plain(model.invoke(text))
    if method == "stream":
        return plain(list(model.stream(text)))

    async def go():
        if method == "ainvoke":
            return await model.ainvoke(text)
        return [chunk async for chunk in model.astream(text)]
    return plain(aio(go()))


LANGCHAIN = [("openai-chat-basic", "invoke"), ("openai-chat-basic", "ainvoke"),
             ("openai-chat-stream-include-usage", "stream"), ("openai-chat-stream-include-usage", "astream"),
             ("anthropic-messages-basic", "invoke"), ("anthropic-messages-cache-read", "ainvoke"),
             ("anthropic-messages-stream", "stream"), ("anthropic-messages-stream-cache-write", "astream")]


@pytest.mark.parametrize("case_id,method", LANGCHAIN)
def test_langchain(replay, aio, case_id, method):
    case = load_case(case_id)
    options = {"stream_usage": True} if case["api"] == "chat" and "stream" in method else {}
    off, on = without_then_with(lambda: langchain_call(case, replay, method, aio, **options))
    assert on == off
    check_exact(case)
    # LangChain's usage_metadata is inclusive as well: the last chunk (or the message) has it
    reported = next(m["usage_metadata"] for m in reversed(on if isinstance(on, list) else [on])
                    if m.get("usage_metadata"))
    record = session.records()[0]
    assert reported["output_tokens"] == record.usage.output_tokens
    if case["api"] == "chat":  # ChatAnthropic's stream puts the input on an earlier chunk
        assert reported["input_tokens"] == record.usage.input_tokens


def test_langchain_stream_without_usage_is_estimated(replay):
    """ChatOpenAI.stream without stream_usage asks for no usage: still one record, whose
    counts are estimated rather than 0."""
    case = load_case("openai-chat-stream-no-usage")
    off, on = without_then_with(lambda: langchain_call(case, replay, "stream", stream_usage=False))
    assert on == off
    [r] = session.records()
    assert r.status == "ok" and r.stream and r.model == case["expected"]["model"]
    assert r.estimated is True and r.usage.input_tokens > 0 and r.usage.output_tokens > 0


def test_langchain_cache_hit_is_no_call(replay):
    """An answer from LangChain's LLM cache is not a call: two invokes, one record."""
    from langchain_core.caches import InMemoryCache
    from langchain_core.globals import get_llm_cache, set_llm_cache

    case = load_case("openai-chat-basic")

    def twice():
        before = get_llm_cache()
        set_llm_cache(InMemoryCache())
        try:
            return [langchain_call(case, replay, "invoke") for _ in range(2)]
        finally:
            set_llm_cache(before)

    off, on = without_then_with(twice)
    assert on == off
    check_exact(case)


# -- LlamaIndex -------------------------------------------------------------------------

def llamaindex_call(case: dict, base: str, method: str, aio: Callable | None = None) -> Any:
    """``complete``/``chat``/``stream_chat`` (or their async forms, run by ``aio``) of the
    case, as plain data."""
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI

    llm = OpenAI(api_base=base + "/v1", api_key="x", model=model_of(case), default_headers=headers(case["id"]))
    messages = [ChatMessage(role=m["role"], content=m["content"]) for m in case["request"]["body"]["messages"]]
    if method == "complete":
        return plain(llm.complete(prompt(case)))
    if method == "chat":
        return plain(llm.chat(messages))
    if method == "stream_chat":
        return plain(list(llm.stream_chat(messages)))

    async def go():
        if method == "achat":
            return await llm.achat(messages)
        return [chunk async for chunk in await llm.astream_chat(messages)]
    return plain(aio(go()))


LLAMAINDEX = [("openai-chat-basic", "complete"), ("openai-chat-history", "chat"),
              ("openai-chat-history", "achat"), ("openai-chat-stream-include-usage", "stream_chat"),
              ("openai-chat-stream-include-usage", "astream_chat")]


@pytest.mark.parametrize("case_id,method", LLAMAINDEX)
def test_llamaindex(replay, aio, case_id, method):
    case = load_case(case_id)
    off, on = without_then_with(lambda: llamaindex_call(case, replay, method, aio))
    assert on == off
    check_exact(case)
