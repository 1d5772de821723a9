"""Amazon Bedrock Runtime: Converse and ConverseStream (Bedrock's own format, the same for
every model), InvokeModel and InvokeModelWithResponseStream (the model's native format;
tokmagic reads Anthropic's). Streams come in AWS's binary event stream framing.

Converse's ``inputTokens`` EXCLUDES cache reads and writes, as Anthropic's
``input_tokens`` does, so they are added back to fit the inclusive convention. botocore's
service model (bedrock-runtime 2023-09-30, TokenUsage) does not settle it: "the number
of tokens sent in the request to the model", with "input tokens read from / written to
the cache" beside it. genai-prices settles it for pricing: its 'aws' extractor adds
``cacheReadInputTokens`` and ``cacheWriteInputTokens`` to ``inputTokens``, as AWS's
prompt-caching guide describes the fields.

The model is the id in the URL (``/model/{modelId}/converse``), kept whole: its
inference-profile prefix (``us.``, ``eu.``, ``global.``) or ARN is what genai-prices
prices ('global.' and regional profiles differ), so the Anthropic model name inside an
InvokeModel body is not used."""
from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import unquote

from ..records import Usage
from .anthropic import MESSAGES, MessagesStream
from .base import Protocol, Reading, StreamReader, as_int, counts, dig, loads

#: botocore percent-encodes the model id, "/" and ":" of an ARN included.
_MODEL_IN_PATH = re.compile(r"/model/([^/]+)/[a-z-]+$")


def converse_usage(u: Any) -> Usage | None:
    if not counts(u, "inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens"):
        return None
    read = as_int(u.get("cacheReadInputTokens"))
    write = as_int(u.get("cacheWriteInputTokens"))
    return Usage(input_tokens=as_int(u.get("inputTokens")) + read + write,
                 cached_input_tokens=read, cache_write_tokens=write,
                 output_tokens=as_int(u.get("outputTokens")))


def _converse_text(blocks: Any, out: list[str]) -> None:
    for block in blocks or ():
        if isinstance(block, dict):
            _delta_text(block, out)


def _delta_text(delta: Any, out: list[str]) -> None:
    """Generated text in a Converse content block or delta: text, reasoning, tool input."""
    if not isinstance(delta, dict):
        return
    for text in (delta.get("text"), dig(delta, "reasoningContent", "text"),
                 dig(delta, "reasoningContent", "reasoningText", "text"),
                 dig(delta, "toolUse", "name")):
        if isinstance(text, str):
            out.append(text)
    tool_input = dig(delta, "toolUse", "input")
    if isinstance(tool_input, str):  # a delta streams the input as JSON text
        out.append(tool_input)
    elif isinstance(tool_input, dict) and tool_input:
        out.append(json.dumps(tool_input))


def _converse_content(blocks: Any, count) -> tuple[int, bool]:
    """Input tokens of Converse content blocks; images, documents and the like have no
    local rule."""
    n, whole = 0, True
    for block in blocks or ():
        if not isinstance(block, dict) or "cachePoint" in block:
            continue
        if isinstance(block.get("text"), str):
            n += count(block["text"])
        elif "json" in block:
            n += count(json.dumps(block["json"]))
        elif isinstance(block.get("toolUse"), dict):
            n += count(json.dumps(block["toolUse"].get("input") or {}))
        elif isinstance(block.get("toolResult"), dict):
            more, ok = _converse_content(block["toolResult"].get("content"), count)
            n, whole = n + more, whole and ok
        else:
            whole = False
    return n, whole


class _BedrockStream(StreamReader):
    def failed(self, name: str | None, data: str) -> bool:
        """An exception or error message, which ends the stream without its final counts
        (botocore raises it to the caller and reads no further)."""
        if not name or not name.startswith(("exception:", "error:")):
            return False
        message = data
        if name.startswith("exception:"):
            try:
                body = loads(data)
                message = body.get("message") or body.get("Message") or data
            except (ValueError, AttributeError):
                pass
        self.reading.error = f"{name.partition(':')[2]}: {message}"
        self.reading.output_final = False
        self.ended = True
        return True


class ConverseStream(_BedrockStream):
    """messageStart, contentBlock* and messageStop events, then ``metadata`` with usage."""

    def event(self, name: str | None, data: str) -> None:
        r = self.reading
        if self.failed(name, data):
            return
        if name == "contentBlockDelta":
            _delta_text(loads(data).get("delta"), r.output_text)
        elif name == "contentBlockStart":
            _delta_text(loads(data).get("start"), r.output_text)
        elif name == "metadata":
            usage = converse_usage(loads(data).get("usage"))
            if usage is not None:
                r.usage, r.complete = usage, True


class InvokeStream(_BedrockStream):
    """``chunk`` events whose ``bytes`` hold one event of the model's native stream,
    base64-encoded; the last one also carries Bedrock's ``amazon-bedrock-invocationMetrics``.
    Anthropic's events are read as Anthropic's stream; the metrics count for a model
    whose own events tokmagic does not read."""

    def __init__(self) -> None:
        super().__init__()
        self._messages = MessagesStream()
        self._messages.reading = self.reading

    def event(self, name: str | None, data: str) -> None:
        r = self.reading
        if self.failed(name, data) or name != "chunk":
            return
        chunk = loads(base64.b64decode(loads(data).get("bytes") or ""))
        if not isinstance(chunk, dict):
            return
        if isinstance(chunk.get("type"), str):
            self._messages.read(chunk)
            r.model = None  # the URL's model id is the one billed
        metrics = chunk.get("amazon-bedrock-invocationMetrics")
        if isinstance(metrics, dict):
            output = as_int(metrics.get("outputTokenCount"))
            if r.usage is None:
                r.usage = Usage(input_tokens=as_int(metrics.get("inputTokenCount")), output_tokens=output)
            elif not r.output_final:
                r.usage.output_tokens = output
            r.output_final = r.complete = True


class _Bedrock(Protocol):
    vendor = "bedrock"

    def recognises(self, path: str) -> bool:
        """Only ``/model/{modelId}/...``: another POST ending in /invoke or /converse (a
        LangServe chain, say) is not Bedrock."""
        return _MODEL_IN_PATH.search(path) is not None

    def path_model(self, path: str) -> str | None:
        m = _MODEL_IN_PATH.search(path)
        return unquote(m.group(1)) if m else None


class Converse(_Bedrock):
    api = "converse"

    def read_body(self, body: Any) -> Reading | None:
        if not isinstance(body, dict):
            return None
        r = Reading(usage=converse_usage(body.get("usage")), complete=True)
        if r.usage is None:
            _converse_text(dig(body, "output", "message", "content"), r.output_text)
        return r

    def stream_reader(self) -> StreamReader:
        return ConverseStream()

    def estimate_input(self, request: dict, count) -> tuple[int, bool]:
        n, whole = _converse_content(request.get("system"), count)
        for msg in request.get("messages") or ():
            if isinstance(msg, dict):
                tokens, ok = _converse_content(msg.get("content"), count)
                n, whole = n + 3 + tokens, whole and ok
        tools = dig(request, "toolConfig", "tools")
        if tools:
            n += count(json.dumps(tools))
        return n, whole


class Invoke(_Bedrock):
    """The body is the model's own format. Anthropic's (``"type": "message"``) is read;
    for another model's answer the counts come from the headers Bedrock adds to every
    InvokeModel response (estimated only where they are missing)."""

    api = "invoke_model"
    usage_headers = ("x-amzn-bedrock-input-token-count", "x-amzn-bedrock-output-token-count")

    def header_usage(self, headers: dict[str, str | None]) -> Usage | None:
        try:
            inp, out = (as_int(int(headers.get(name))) for name in self.usage_headers)
        except (TypeError, ValueError):  # absent or not a count: the tokens are estimated
            return None
        return Usage(input_tokens=inp, output_tokens=out)

    def read_body(self, body: Any) -> Reading | None:
        if not isinstance(body, dict):
            return None
        if body.get("type") != "message":
            return Reading(complete=True)
        r = MESSAGES.read_body(body)
        r.model = None  # the URL's model id is the one billed
        return r

    def stream_reader(self) -> StreamReader:
        return InvokeStream()

    def estimate_input(self, request: dict, count) -> tuple[int, bool]:
        if "messages" in request:  # Anthropic's Messages format
            return MESSAGES.estimate_input(request, count)
        return super().estimate_input(request, count)


CONVERSE, INVOKE = Converse(), Invoke()
