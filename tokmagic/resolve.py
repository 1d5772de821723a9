"""The work done when a record is first read rather than during the user's call: what
the response said (capture.outcome), local token estimates for responses without usage,
and the price."""
from __future__ import annotations

import json
import math

from . import pricing
from .pricing import cost_usd
from .protocols import Protocol, Reading
from .records import CallRecord, Usage
from .tokens import Counter
from .warn import warn_once


class Estimate:
    """What an estimate needs, held only until the record is resolved: the request body
    and the text the response streamed (None when only the request's model is needed)."""

    __slots__ = ("protocol", "request_body", "reading")

    def __init__(self, protocol: Protocol, request_body: bytes | None, reading: Reading | None) -> None:
        self.protocol = protocol
        self.request_body = request_body
        self.reading = reading

    def apply(self, record: CallRecord) -> None:
        try:
            request = json.loads(self.request_body) if self.request_body else {}
        except ValueError:
            request = {}
        if not isinstance(request, dict):
            request = {}
        if record.model is None:
            model = self.protocol.request_model(request)
            record.model = model if isinstance(model, str) and model else None
        reading = self.reading
        if reading is None:
            return
        counter = Counter(record.model)
        output = counter.count("".join(reading.output_text))
        method = counter.method
        if reading.usage is None:
            tokens, whole = self.protocol.estimate_input(request, counter.count)
            if not whole:
                method += " (some input parts not estimable)"
            record.usage = Usage(input_tokens=tokens, output_tokens=output)
        else:  # input reported, output cut short: keep the reported input
            record.usage.output_tokens = max(record.usage.output_tokens, output)
        record.estimated = True
        record.estimate_method = method


def resolve(record: CallRecord) -> None:
    """Read what a record's response said, fill in estimates and price; safe to call
    again (it prices again only if prices changed). Each step done may leave the next
    one pending."""
    while record.pending is not None:
        pending, record.pending = record.pending, None
        try:
            pending.apply(record)
        except Exception as exc:  # an estimate is a nicety; reading usage must not fail
            warn_once(f"estimate:{type(exc).__name__}", f"tokmagic: could not estimate the tokens "
                      f"of a {record.provider} call ({exc!r}); its counts show what was reported.")
    if record.priced == pricing.generation or record.ignored:
        return
    record.priced = pricing.generation
    u = record.usage
    if record.status == "unparsed":
        record.cost_usd = math.nan
    elif record.status == "error" and u == Usage():
        record.cost_usd = 0.0  # providers do not bill a refused request
    else:
        try:
            record.cost_usd = cost_usd(record.provider, record.model, u, record.deployment)
        except Exception as exc:  # records are read inside the user's cells: never raise there
            record.cost_usd = math.nan
            warn_once(f"price-failed:{type(exc).__name__}", f"tokmagic: could not price a "
                      f"{record.model!r} call ({exc!r}); its cost shows as NaN. Please report this.")
