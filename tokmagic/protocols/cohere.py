"""Cohere's own API: Chat and Embed, v2 (``cohere.ClientV2``) and v1 (``cohere.Client``).

Cohere reports two sets of counts, and tokmagic prefers ``billed_units``:

* ``billed_units.{input_tokens,output_tokens}`` are what Cohere charges for, and prices
  are quoted per billed token, so a cost computed from them is the one on the invoice.
* ``tokens.{input_tokens,output_tokens}`` are what the model processed, which includes
  the prompt template and special tokens Cohere wraps around the caller's messages
  (not billed); pricing them would overstate the cost, by a lot for short prompts.

``tokens`` is read only when a response carries no ``billed_units``. ``cached_tokens``
is counted on the ``tokens`` scale, so it cannot be taken as a part of the billed input
and is not read. Responses do not name the model: it is the request's.

v2 chat answers carry ``usage``; v1 answers and embeddings carry ``meta``. v2 streams are
Server-Sent Events whose ``message-end`` event carries ``delta.usage``. v1 streams are one
JSON object a line (``application/stream+json``), told apart by ``event_type``; the last,
``stream-end``, holds the whole answer in ``response``, counts in ``response.meta``."""
from __future__ import annotations

import json
from typing import Any

from ..records import Usage
from .base import Protocol, Reading, StreamReader, as_int, counts, loads


def cohere_usage(u: Any) -> Usage | None:
    """Usage from a v2 ``usage`` or a v1 / embed ``meta`` object."""
    if not isinstance(u, dict):
        return None
    billed = u.get("billed_units") if isinstance(u.get("billed_units"), dict) else u.get("tokens")
    if not counts(billed, "input_tokens", "output_tokens"):
        return None
    return Usage(input_tokens=as_int(billed.get("input_tokens")),
                 output_tokens=as_int(billed.get("output_tokens")))


def _calls_text(calls: Any, out: list[str]) -> None:
    """Tool calls are output tokens too: their names and arguments. A whole message has a
    list of calls; a stream's tool-call events carry one call each."""
    for call in [calls] if isinstance(calls, dict) else calls if isinstance(calls, list) else ():
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            out.extend(v for v in (fn.get("name"), fn.get("arguments")) if isinstance(v, str))


def _v1_calls_text(calls: Any, out: list[str]) -> None:
    """v1 tool calls (a whole answer's, or a stream's ``tool-calls-generation``): a name
    and the parameters as an object."""
    for call in calls if isinstance(calls, list) else ():
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            out += [call["name"], json.dumps(call.get("parameters") or {})]


def _message_text(message: Any, out: list[str]) -> None:
    """The output of a v2 message (whole, or one stream delta's ``message``)."""
    if not isinstance(message, dict):
        return
    content = message.get("content")
    for part in content if isinstance(content, list) else [content]:
        if isinstance(part, dict):
            out.extend(v for v in (part.get("text"), part.get("thinking")) if isinstance(v, str))
    if isinstance(message.get("tool_plan"), str):
        out.append(message["tool_plan"])
    _calls_text(message.get("tool_calls"), out)


class ChatStream(StreamReader):
    """A chat stream, v2 or v1 (each event says which). v2: text in ``content-delta`` (and
    tool events), the counts and the end in ``message-end``. v1: see ``_v1_event``."""

    def __init__(self) -> None:
        super().__init__()
        self._v1_call_chunks = False  # whether v1 tool calls came in pieces

    def event(self, name: str | None, data: str) -> None:
        if data.startswith("[DONE]"):  # a closing sentinel, which the SDK accepts too
            return
        event = loads(data)
        if not isinstance(event, dict):
            return
        if "event_type" in event:
            self._v1_event(event)
            return
        r = self.reading
        delta = event.get("delta") if isinstance(event.get("delta"), dict) else {}
        _message_text(delta.get("message"), r.output_text)
        if (event.get("type") or name) == "message-end":
            r.complete = True
            r.usage = cohere_usage(delta.get("usage"))
            if delta.get("error"):
                r.error = str(delta["error"])

    def _v1_event(self, event: dict) -> None:
        """Text in ``text-generation``; a tool plan (``text``) and tool calls (name and
        argument pieces) in ``tool-calls-chunk``; ``tool-calls-generation`` repeats the
        whole calls, so it is counted only when no pieces came; ``stream-end`` repeats
        the whole text, so only its counts are read."""
        r, kind = self.reading, event.get("event_type")
        if kind == "text-generation" and isinstance(event.get("text"), str):
            r.output_text.append(event["text"])
        elif kind == "tool-calls-chunk":
            if isinstance(event.get("text"), str):
                r.output_text.append(event["text"])
            delta = event.get("tool_call_delta")
            if isinstance(delta, dict):
                self._v1_call_chunks = True
                r.output_text.extend(v for v in (delta.get("name"), delta.get("parameters")) if isinstance(v, str))
        elif kind == "tool-calls-generation" and not self._v1_call_chunks:
            if isinstance(event.get("text"), str):
                r.output_text.append(event["text"])
            _v1_calls_text(event.get("tool_calls"), r.output_text)
        elif kind == "stream-end":
            r.complete = True
            response = event.get("response") if isinstance(event.get("response"), dict) else {}
            r.usage = cohere_usage(response.get("meta"))
            finish = event.get("finish_reason")
            if isinstance(finish, str) and finish.startswith("ERROR"):  # ERROR, ERROR_TOXIC, ERROR_LIMIT
                r.error = finish


class Chat(Protocol):
    vendor, api = "cohere", "chat"
    request_keys = ("messages", "message")  # v2, v1

    def read_body(self, body: Any) -> Reading | None:
        if not isinstance(body, dict):
            return None
        r = Reading(usage=cohere_usage(body.get("usage") or body.get("meta")), complete=True)
        if r.usage is None:
            _message_text(body.get("message"), r.output_text)
            if isinstance(body.get("text"), str):  # v1
                r.output_text.append(body["text"])
            _v1_calls_text(body.get("tool_calls"), r.output_text)
        return r

    def stream_reader(self) -> StreamReader:
        return ChatStream()

    def estimate_input(self, request: dict, count) -> tuple[int, bool]:
        """The messages' text, and the tool definitions, which are input too."""
        texts = [request.get("message"), request.get("preamble")]  # v1
        for msg in request.get("messages") or request.get("chat_history") or ():
            content = msg.get("content", msg.get("message")) if isinstance(msg, dict) else None
            parts = content if isinstance(content, list) else [content]
            texts += [p.get("text") if isinstance(p, dict) else p for p in parts]
        if request.get("tools"):
            texts.append(json.dumps(request["tools"]))
        return sum(count(t) for t in texts if isinstance(t, str)), True


class Embed(Protocol):
    """Embeddings: input only, counted in ``meta``."""

    vendor, api = "cohere", "embed"
    request_keys = ("texts", "inputs", "images")

    def read_body(self, body: Any) -> Reading | None:
        if not isinstance(body, dict):
            return None
        return Reading(usage=cohere_usage(body.get("meta")), complete=True)

    def stream_reader(self) -> StreamReader:  # embeddings never stream
        return ChatStream()

    def estimate_input(self, request: dict, count) -> tuple[int, bool]:
        """The ``texts``; images and mixed ``inputs`` have no local rule."""
        texts = request.get("texts") or []
        return (sum(count(t) for t in texts if isinstance(t, str)),
                not (request.get("images") or request.get("inputs")))


CHAT, EMBED = Chat(), Embed()
