"""The wrappers urllib3 and aiohttp are patched with: ones that spell out the parameters
of the method they wrap, used only where the installed method takes exactly those (with
its own defaults), and generic ones elsewhere, which must record the same."""
from __future__ import annotations

import asyncio
import functools
import json

import aiohttp
import pytest
import urllib3

import tokmagic
from tokmagic.capture import aiohttp as aiohttp_capture
from tokmagic.capture import patching
from tokmagic.capture import urllib3 as urllib3_capture
from tokmagic.monitor import session

from .conftest import load_case
from .test_http_libraries import CLIENTS, TOKEN_FIELDS, _joined

_STAR_ARGS = 0x04 | 0x08
#: Every method capture wraps in the two libraries, and whether its wrapper may spell
#: out its parameters (aiohttp's _request takes some thirty keywords: it never does).
#: The response (and aiohttp's reader) methods are wrapped in the subclasses that an
#: LLM response's objects take while its body is watched.
WRAPPED = [(lambda: urllib3.connectionpool.HTTPConnectionPool, "_make_request", True),
           *((lambda: urllib3_capture._subclasses[urllib3.response.HTTPResponse], name, True)
             for name in ("read", "read1", "read_chunked", "close", "release_conn", "drain_conn")),
           *((lambda: aiohttp_capture._subclasses[aiohttp.StreamReader], name, True)
             for name in ("feed_data", "feed_eof", "set_exception")),
           *((lambda: aiohttp_capture._subclasses[aiohttp.ClientResponse], name, True)
             for name in ("close", "release")),
           (lambda: aiohttp.ClientSession, "_request", False)]


def _generic(func) -> bool:
    return bool(func.__code__.co_flags & _STAR_ARGS)


# -- wrap() ------------------------------------------------------------------------------

_SENTINEL = object()


def _class():
    class Thing:
        def call(self, a, b=_SENTINEL, *, c=3):
            return a, b, c
    return Thing


def _exact(original):
    def call(self, a, b=None, *, c=None):  # the defaults are the original's once wrapped
        return ("exact", *original(self, a, b, c=c))
    return call


def _any(original):
    def call(self, *args, **kwargs):
        return ("generic", *original(self, *args, **kwargs))
    return call


def test_a_wrapper_with_the_same_parameters_takes_the_original_defaults():
    thing = _class()
    patching.wrap(thing, "call", _exact, _any)
    assert thing().call(1) == ("exact", 1, _SENTINEL, 3)
    assert thing().call(1, b=2, c=4) == ("exact", 1, 2, 4)
    assert thing.call.__name__ == "call" and thing.call.__qualname__.endswith("Thing.call")


@pytest.mark.parametrize("other", [
    lambda self, a, b=_SENTINEL, *, c=3, d=4: (a, b, c),      # a parameter more
    lambda self, a, b=_SENTINEL: (a, b, 3),                   # one fewer
    lambda self, a, z=_SENTINEL, *, c=3: (a, z, c),           # renamed
    lambda self, a, b, *, c=3: (a, b, c),                     # no default
    lambda self, a, b=_SENTINEL, c=3: (a, b, c),              # c positional
], ids=["more", "fewer", "renamed", "no-default", "kind"])
def test_another_signature_gets_the_generic_wrapper(other):
    thing = _class()
    thing.call = other
    patching.wrap(thing, "call", _exact, _any)
    assert thing().call(1, 2)[0] == "generic"


def test_a_wrapper_someone_else_put_there_gets_the_generic_wrapper():
    """Theirs names the method it wraps, but takes *args: its defaults are not the method's."""
    thing = _class()
    theirs = thing.call

    @functools.wraps(theirs)
    def call(self, *args, **kwargs):
        return theirs(self, *args, **kwargs)
    thing.call = call
    patching.wrap(thing, "call", _exact, _any)
    assert thing().call(1) == ("generic", 1, _SENTINEL, 3)


def test_wrap_twice_changes_nothing_and_unwrap_restores_only_ours():
    thing = _class()
    original = thing.__dict__["call"]
    patching.wrap(thing, "call", _exact, _any)
    ours = thing.__dict__["call"]
    patching.wrap(thing, "call", _exact, _any)
    assert thing.__dict__["call"] is ours
    patching.unwrap(thing, "call")
    assert thing.__dict__["call"] is original
    thing.call = theirs = lambda self, a: a
    patching.unwrap(thing, "call")
    assert thing.__dict__["call"] is theirs


def test_post_is_every_spelling_of_post_and_nothing_else():
    assert len(patching.POST) == 16 and {"POST", "post", "Post", "pOsT"} <= patching.POST
    assert not {"GET", "PUT", "POS", "POST ", "PATCH"} & patching.POST


# -- the wrappers of the installed versions ----------------------------------------------

def test_the_installed_libraries_get_the_wrappers_that_pass_arguments_on_as_they_are():
    """If this fails after an upgrade, capture still works, through the generic wrappers,
    but costs every request more: bring the exact wrapper up to the new signature."""
    generic = [f"{owner().__name__}.{name}" for owner, name, exact in WRAPPED
               if exact and _generic(owner().__dict__[name])]
    assert generic == []


def test_a_request_that_is_not_a_post_gets_aiohttps_own_coroutine(replay):
    original = aiohttp.ClientSession.__dict__["_request"].__tokmagic_original__

    async def go():
        async with aiohttp.ClientSession() as s:
            request = s._request("GET", replay + "/v1/models")
            assert request.cr_code is original.__code__  # not wrapped in one of tokmagic's
            (await request).release()
            with pytest.raises(TypeError):  # bad arguments raise where they would without us
                s.post(replay + "/v1/chat/completions", bogus=1)
    asyncio.run(go())
    assert session.records() == []


def test_only_an_llm_responses_objects_are_watched_and_only_while_its_body_arrives(serve_cases):
    """Other responses keep aiohttp's own classes; an LLM stream's reader and response
    take the watching subclasses while it arrives, and their own classes back after."""
    chat = load_case("openai-chat-stream-include-usage")
    replay = serve_cases([chat, load_case("openai-chat-basic")], event_delay_ms=20)  # it visibly streams

    async def go():
        async with aiohttp.ClientSession() as s:
            async with s.post(replay + "/other", json={}) as other:  # no LLM path: a 404
                await other.read()
                assert (type(other), type(other.content)) == (aiohttp.ClientResponse, aiohttp.StreamReader)
            async with s.post(replay + "/v1/chat/completions", json=chat["request"]["body"],
                              headers={"X-Replay-Case": chat["id"]}) as r:
                first = await r.content.readline()
                watched = (type(r), type(r.content))
                await r.read()
                after = (type(r), type(r.content))
        return first, watched, after
    first, watched, after = asyncio.run(go())
    assert first.startswith(b"data: ")
    assert watched == (aiohttp_capture._subclasses[aiohttp.ClientResponse],
                       aiohttp_capture._subclasses[aiohttp.StreamReader])
    assert issubclass(watched[0], aiohttp.ClientResponse) and issubclass(watched[1], aiohttp.StreamReader)
    assert after == (aiohttp.ClientResponse, aiohttp.StreamReader)
    (record,) = session.records()
    assert (record.status, record.usage.input_tokens) == ("ok", chat["expected"]["input_tokens"])


def test_only_an_llm_response_is_a_watched_urllib3_response_and_only_while_read(replay):
    chat = load_case("openai-chat-stream-include-usage")
    pool = urllib3.PoolManager()
    other = pool.request("POST", replay + "/other", body=b"{}")
    assert type(other) is urllib3.response.HTTPResponse
    r = pool.request("POST", replay + "/v1/chat/completions", preload_content=False,
                     body=json.dumps(chat["request"]["body"]).encode(),
                     headers={"X-Replay-Case": chat["id"], "Content-Type": "application/json"})
    watched = type(r)
    r.read()
    r.release_conn()
    assert watched is urllib3_capture._subclasses[urllib3.response.HTTPResponse]
    assert issubclass(watched, urllib3.response.HTTPResponse) and type(r) is urllib3.response.HTTPResponse
    (record,) = session.records()
    assert (record.status, record.usage.input_tokens) == ("ok", chat["expected"]["input_tokens"])


# -- the generic wrappers record what the exact ones do ------------------------------------

def _reinstall(monkeypatch, generic: bool) -> None:
    """Capture installed again: as on a version whose signatures differ from those the
    exact wrappers were written for, or as here."""
    tokmagic.uninstall()
    if generic:
        monkeypatch.setattr(patching, "same_parameters", lambda wrapper, original: False)
    else:
        monkeypatch.undo()
    tokmagic.install()
    assert [_generic(owner().__dict__[name]) for owner, name, exact in WRAPPED if exact] == \
        [generic] * sum(exact for _, _, exact in WRAPPED)


def _outcome(records) -> list[tuple]:
    return [(r.status, r.http_status, r.model, r.stream, r.estimated, r.error,
             tuple(getattr(r.usage, f) for f in TOKEN_FIELDS)) for r in records]


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("case_id", ["openai-chat-basic", "openai-chat-stream-include-usage",
                                     "openai-chat-stream-truncated", "openai-chat-error-400"])
def test_the_generic_wrappers_record_what_the_exact_ones_do(replay, monkeypatch, case_id, client):
    case = load_case(case_id)
    runs = []
    for generic in (True, False):
        _reinstall(monkeypatch, generic)
        session.reset()
        status, items, error = client(replay, case)
        runs.append((_outcome(session.records()), status, _joined(items), error))
    assert len(runs[0][0]) == 1
    assert runs[0] == runs[1]
