"""OpenAI's wire formats, which most other hosts speak too: Chat Completions, legacy
Completions, Responses and Embeddings."""
from __future__ import annotations

import json
from typing import Any

from ..records import Usage
from . import images
from .base import Protocol, Reading, StreamReader, as_int, counts, dig, loads


def chat_usage(u: Any) -> Usage | None:
    """Chat Completions usage: prompt_tokens already include cached tokens and
    completion_tokens include reasoning, as the inclusive convention wants."""
    if not counts(u, "prompt_tokens", "completion_tokens"):
        return None
    return Usage(input_tokens=as_int(u.get("prompt_tokens")),
                 cached_input_tokens=as_int(dig(u, "prompt_tokens_details", "cached_tokens")),
                 cache_write_tokens=as_int(dig(u, "prompt_tokens_details", "cache_write_tokens")),
                 output_tokens=as_int(u.get("completion_tokens")),
                 reasoning_tokens=as_int(dig(u, "completion_tokens_details", "reasoning_tokens")))


def responses_usage(u: Any) -> Usage | None:
    if not counts(u, "input_tokens", "output_tokens"):
        return None
    return Usage(input_tokens=as_int(u.get("input_tokens")),
                 cached_input_tokens=as_int(dig(u, "input_tokens_details", "cached_tokens")),
                 cache_write_tokens=as_int(dig(u, "input_tokens_details", "cache_write_tokens")),
                 output_tokens=as_int(u.get("output_tokens")),
                 reasoning_tokens=as_int(dig(u, "output_tokens_details", "reasoning_tokens")))


def _choice_text(choice: dict, out: list[str]) -> None:
    """The output of one choice (or one streamed delta): text, refusal, reasoning text
    and tool calls, whose names and arguments are output tokens too."""
    part = choice.get("delta") or choice.get("message") or {}
    for key in ("content", "refusal", "reasoning_content"):
        if isinstance(part.get(key), str):
            out.append(part[key])
    if isinstance(choice.get("text"), str):  # legacy completions
        out.append(choice["text"])
    for call in part.get("tool_calls") or ():
        fn = call.get("function") or {}
        out.extend(v for v in (fn.get("name"), fn.get("arguments")) if isinstance(v, str))


# -- estimates (OpenAI Cookbook rules; they reproduce the API's prompt_tokens) --------

def _content_tokens(content: Any, count, model: str | None) -> tuple[int, bool]:
    if isinstance(content, str):
        return count(content), True
    n, whole = 0, True
    for part in content or ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            n += count(part.get("text") or "")
        elif kind in ("image_url", "input_image"):
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            detail = (image.get("detail") if isinstance(image, dict) else None) or part.get("detail")
            tokens = images.openai_image_tokens(url, detail, model)
            if tokens is None:
                whole = False
            else:
                n += tokens
        else:  # audio, files: no local rule
            whole = False
    return n, whole


def _tool_tokens(tools: list, count, model: str | None) -> int:
    """The Cookbook's heuristic for function definitions the API injects into the prompt."""
    legacy = not (model or "").startswith(("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4"))
    n = 0
    for tool in tools:
        fn = tool.get("function", tool) if isinstance(tool, dict) else {}
        desc = (fn.get("description") or "").rstrip(".")
        n += (10 if legacy else 7) + count(f"{fn.get('name', '')}:{desc}")
        props = dig(fn, "parameters", "properties") or {}
        if props:
            n += 3
        for key, spec in props.items():
            spec = spec if isinstance(spec, dict) else {}
            pdesc = (spec.get("description") or "").rstrip(".")
            n += 3 + count(f"{key}:{spec.get('type', '')}:{pdesc}")
            if isinstance(spec.get("enum"), list):
                n += -3 + sum(3 + count(str(item)) for item in spec["enum"])
    return n + 12 if tools else 0


def estimate_messages(messages: list, count, model: str | None, tools: list | None = None) -> tuple[int, bool]:
    n, whole = 3, True  # every reply is primed with <|start|>assistant<|message|>
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        tokens, ok = _content_tokens(msg.get("content"), count, model)
        n += 3 + count(msg.get("role") or "") + tokens
        whole &= ok
        if msg.get("name"):
            n += 1 + count(msg["name"])
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") or {}
            n += count(fn.get("name") or "") + count(fn.get("arguments") or "")
    return n + _tool_tokens(tools or [], count, model), whole


# -- Chat Completions ---------------------------------------------------------------

class ChatStream(StreamReader):
    """Chat chunks. With n > 1 the choices' chunks interleave, each naming its choice's
    ``index``; each choice's text is kept together, choice after choice, so an estimate
    counts every choice's text as it was generated rather than a mix of all of them."""

    def __init__(self) -> None:
        super().__init__()
        self._ends: list[int] = []  # where each choice's text ends in output_text

    def _add(self, choice: dict) -> None:
        index = choice.get("index")
        index = index if type(index) is int and 0 <= index < 1024 else 0
        ends, out = self._ends, self.reading.output_text
        while len(ends) <= index:
            ends.append(len(out))
        if index == len(ends) - 1:  # the last choice (the only one when n = 1): at the end
            _choice_text(choice, out)
            ends[index] = len(out)
            return
        pieces: list[str] = []
        _choice_text(choice, pieces)
        out[ends[index]:ends[index]] = pieces
        for i in range(index, len(ends)):
            ends[i] += len(pieces)

    def event(self, name: str | None, data: str) -> None:
        r = self.reading
        if data.startswith("[DONE]"):
            r.complete = True
            return
        chunk = loads(data)
        if not isinstance(chunk, dict):
            return
        if chunk.get("model"):
            r.model = chunk["model"]
        usage = chunk.get("usage") or dig(chunk, "x_groq", "usage")
        if usage:
            r.usage = chat_usage(usage)
            # include_usage's own chunk, with no choices, is the last before [DONE]: a
            # caller who stops there has the whole answer (servers that repeat usage on
            # every chunk send it with choices)
            r.complete = r.usage is not None and not chunk.get("choices")
        if chunk.get("error"):
            r.error = str(dig(chunk, "error", "message") or chunk["error"])
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                self._add(choice)


class Chat(Protocol):
    vendor, api = "openai", "chat"
    request_keys = ("messages",)

    def read_body(self, body: Any) -> Reading | None:
        if not isinstance(body, dict):
            return None
        r = Reading(model=body.get("model"), usage=chat_usage(body.get("usage")), complete=True)
        if r.usage is None:
            for choice in body.get("choices") or ():
                _choice_text(choice, r.output_text)
        return r

    def stream_reader(self) -> StreamReader:
        return ChatStream()

    def estimate_input(self, request: dict, count) -> tuple[int, bool]:
        return estimate_messages(request.get("messages") or [], count, request.get("model"),
                                 request.get("tools") or request.get("functions"))


class Completions(Chat):
    api = "completions"
    request_keys = ("prompt",)

    def estimate_input(self, request: dict, count) -> tuple[int, bool]:
        prompt = request.get("prompt")
        texts = prompt if isinstance(prompt, list) else [prompt]
        return sum(count(t) for t in texts if isinstance(t, str)), all(isinstance(t, str) for t in texts)


# -- Responses ----------------------------------------------------------------------

def _responses_output(body: dict, out: list[str]) -> None:
    for item in body.get("output") or ():
        if not isinstance(item, dict):
            continue
        for part in item.get("content") or item.get("summary") or ():
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
        for key in ("name", "arguments"):
            if isinstance(item.get(key), str):
                out.append(item[key])


class ResponsesStream(StreamReader):
    _FINAL = ("response.completed", "response.incomplete", "response.failed")

    def event(self, name: str | None, data: str) -> None:
        r = self.reading
        event = loads(data)
        kind = event.get("type") or name
        if kind in ("response.output_text.delta", "response.function_call_arguments.delta",
                    "response.reasoning_summary_text.delta", "response.refusal.delta"):
            if isinstance(event.get("delta"), str):
                r.output_text.append(event["delta"])
        elif kind in self._FINAL or kind == "response.created":
            body = event.get("response") or {}
            r.model = body.get("model") or r.model
            if kind in self._FINAL:
                r.complete = True
                r.usage = responses_usage(body.get("usage"))
                if kind == "response.failed":
                    r.error = str(dig(body, "error", "message") or "response.failed")
        elif kind == "error":
            r.error = str(event.get("message") or event)


def _as_message(item: Any) -> Any:
    """A Responses input item as a chat message, so that earlier tool calls and their
    outputs count as the input tokens they are."""
    if not isinstance(item, dict):
        return item
    if item.get("type") == "function_call":
        return {"role": "assistant", "tool_calls": [{"function": {"name": item.get("name"),
                                                                   "arguments": item.get("arguments")}}]}
    if item.get("type") == "function_call_output":
        output = item.get("output")
        return {"role": "tool", "content": output if isinstance(output, (str, list)) else json.dumps(output)}
    return item


class Responses(Protocol):
    vendor, api = "openai", "responses"
    request_keys = ("input", "previous_response_id", "prompt", "conversation")

    def read_body(self, body: Any) -> Reading | None:
        if not isinstance(body, dict):
            return None
        r = Reading(model=body.get("model"), usage=responses_usage(body.get("usage")), complete=True)
        if r.usage is None:
            _responses_output(body, r.output_text)
        return r

    def stream_reader(self) -> StreamReader:
        return ResponsesStream()

    def estimate_input(self, request: dict, count) -> tuple[int, bool]:
        items = request.get("input")
        messages = [{"role": "user", "content": items}] if isinstance(items, str) else [_as_message(i) for i in items or ()]
        if request.get("instructions"):
            messages.insert(0, {"role": "system", "content": request["instructions"]})
        return estimate_messages(messages, count, request.get("model"), request.get("tools"))


# -- Embeddings ---------------------------------------------------------------------

class Embeddings(Protocol):
    vendor, api = "openai", "embeddings"
    request_keys = ("input",)

    def read_body(self, body: Any) -> Reading | None:
        if not isinstance(body, dict):
            return None
        return Reading(model=body.get("model"), usage=chat_usage(body.get("usage")), complete=True)

    def estimate_input(self, request: dict, count) -> tuple[int, bool]:
        items = request.get("input")
        texts = items if isinstance(items, list) else [items]
        if all(isinstance(t, str) for t in texts):
            return sum(count(t) for t in texts), True
        return sum(len(t) for t in texts if isinstance(t, list)), True  # already token ids

    def stream_reader(self) -> StreamReader:  # embeddings never stream
        return ChatStream()


CHAT, COMPLETIONS, RESPONSES, EMBEDDINGS = Chat(), Completions(), Responses(), Embeddings()
