"""What every wire format provides: read usage from a whole body or from a stream of
events, and estimate tokens from the request when the provider reported none."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..records import Usage


@dataclass
class Reading:
    """What tokmagic read from one response.

    ``usage`` is None when the provider reported none. ``output_final`` is False when the
    reported output count is a placeholder (an Anthropic stream cut before its last
    delta), so output must be estimated. ``output_text`` keeps the generated text only
    until an estimate needs it."""

    model: str | None = None
    usage: Usage | None = None
    output_final: bool = True
    complete: bool = False
    output_text: list[str] = field(default_factory=list)
    error: str | None = None


class StreamReader:
    """Reads one streamed response event by event; subclasses handle one wire format."""

    #: Set by a format whose stream stops at an event while the body may go unread and
    #: unclosed (botocore raises at an AWS exception message and leaves the body): the
    #: record is made at that event rather than never.
    ended = False

    def __init__(self) -> None:
        self.reading = Reading()

    def event(self, name: str | None, data: str) -> None:
        raise NotImplementedError


class Protocol:
    """One wire format (an API of a vendor). Instances are stateless and shared."""

    vendor = ""
    api = ""
    #: "sse" or "ndjson": how a streamed response of this format is framed.
    framing = "sse"
    #: Response headers (lower case) that carry usage where the body may not: capture
    #: keeps their values for ``header_usage``. Empty for nearly every format.
    usage_headers: tuple[str, ...] = ()
    #: Keys one of which every request of this format has (a chat's "messages"): a POST
    #: to a path of this format without any, answered by something that is not this
    #: format's answer, is a web app's own endpoint, not an LLM call. Empty: not asked.
    request_keys: tuple[str, ...] = ()

    def read_body(self, body: Any) -> Reading | None:
        """What a whole JSON body says; None when it is not this format's answer."""
        raise NotImplementedError

    def stream_reader(self) -> StreamReader:
        raise NotImplementedError

    def recognises(self, path: str) -> bool:
        """Whether a POST to ``path``, whose ending named this format, really speaks it
        (asked only after that ending matched)."""
        return True

    def speaks(self, request_body: bytes | None) -> bool:
        """Whether a request body is one of this format's requests (see request_keys);
        a body tokmagic did not see counts as one."""
        if request_body is None or not self.request_keys:
            return True
        try:
            request = json.loads(request_body)
        except ValueError:
            return False
        return isinstance(request, dict) and any(key in request for key in self.request_keys)

    def header_usage(self, headers: dict[str, str | None]) -> Usage | None:
        """Usage from the values of ``usage_headers``, for a body that reported none."""
        return None

    def request_model(self, request: dict) -> str | None:
        return request.get("model")

    def path_model(self, path: str) -> str | None:
        """The model named in the URL, for APIs that put it there (Gemini)."""
        return None

    def estimate_input(self, request: dict, count) -> tuple[int, bool]:
        """Input tokens of ``request`` counted with ``count(text)``, and whether every part
        could be counted (an image without a rule cannot)."""
        return count(json.dumps(request, ensure_ascii=False)), True


def loads(data: str | bytes) -> Any:
    return json.loads(data)


class NotACount(ValueError):
    """A usage field that holds no token count: the provider's data, not a tokmagic bug."""


#: The largest usage count believed; a larger one is junk (and would overflow the int64
#: columns of ``usage()``).
MAX_COUNT = 10**12


def as_int(value: Any) -> int:
    """A usage count as an int; 0 when the field is absent or null. Anything else that is
    not a count (negative, huge, fractional, a string, a bool) raises NotACount, so the
    response is recorded as unparsed rather than with made-up numbers."""
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value
    if value is None:
        return 0
    if type(value) is float and value.is_integer() and 0 <= value <= MAX_COUNT:
        return int(value)
    raise NotACount(f"not a token count: {value!r:.80}")


def counts(usage: Any, *keys: str) -> bool:
    """Whether a usage object holds any of its format's counts: one without (``{}``, all
    null, only a total) reports nothing, so the tokens are estimated, not taken as 0."""
    return isinstance(usage, dict) and any(usage.get(key) is not None for key in keys)


def dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj
