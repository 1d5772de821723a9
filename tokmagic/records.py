"""The call record and the usage it carries: plain data, shared by every layer."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

#: A record's status: the exchange completed, the provider answered with an HTTP error,
#: the stream stopped before its end, or tokmagic could not read the provider's answer.
STATUSES = ("ok", "error", "interrupted", "unparsed")


@dataclass
class Usage:
    """Token counts in one convention, the inclusive one of OpenTelemetry's GenAI
    conventions and genai-prices: input counts all input including cache reads and
    writes, output counts all output including reasoning."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class Scope:
    """Where a call came from: the notebook cell that ran and the user's tag."""

    cell: int | None = None
    cell_id: str | None = None
    tag: str | None = None
    #: Set when the cell is over, so calls from threads it left running are told apart.
    ended: bool = field(default=False, compare=False)
    #: The scope this one was opened in (a track() block inside a cell): a call made in
    #: a scope also counts for the scopes around it.
    parent: "Scope | None" = field(default=None, compare=False, repr=False)

    def within(self, other: "Scope") -> bool:
        """Whether this scope is ``other`` or was opened inside it."""
        scope: Scope | None = self
        while scope is not None:
            if scope is other:
                return True
            scope = scope.parent
        return False


#: The scope of calls whose origin is unknown (a thread started before tokmagic loaded).
BACKGROUND = Scope()


@dataclass
class CallRecord:
    """One HTTP exchange with an LLM API.

    ``cost_usd`` is NaN while the price is unknown; ``estimated`` says that some token
    counts were estimated locally because the provider reported none.
    """

    time: float
    provider: str
    api: str
    model: str | None
    stream: bool
    status: str
    http_status: int | None
    host: str = ""
    #: The Azure OpenAI deployment called (the path segment after /openai/deployments/):
    #: Azure may name only the model family in its responses, so the deployment is what
    #: tells which model was priced, and what tokmagic.set_deployment maps.
    deployment: str | None = None
    usage: Usage = field(default_factory=Usage)
    estimated: bool = False
    estimate_method: str | None = None
    cost_usd: float = math.nan
    latency_s: float = math.nan
    ttft_s: float = math.nan
    cell: int | None = None
    cell_id: str | None = None
    tag: str | None = None
    #: True for a call whose cell had already ended (a thread or task left running):
    #: it is kept out of every cell's totals rather than charged to the next cell.
    background: bool = False
    #: Attempts of one logical call (SDK retries) share a call_id; attempt counts from 1.
    call_id: str | None = None
    attempt: int = 1
    error: str | None = None
    source: str = "capture"
    #: Work left for when the record is first read (reading the response, a local
    #: estimate, the price): it is kept off the user's call path. Until it is done, only
    #: the scope, times and HTTP facts are final; the monitor's readers resolve it first.
    #: Dropped once done, so no prompt or response text lingers.
    pending: Any = field(default=None, repr=False, compare=False)
    #: The pricing generation (pricing.generation, from 1) the cost was computed under;
    #: 0 until priced. A price set later starts a new generation, which reprices it.
    priced: int = field(default=0, repr=False, compare=False)
    #: Set when the exchange turned out to be no LLM call (a web app's own /api/chat):
    #: the monitor drops it when it is read, so no result shows it.
    ignored: bool = field(default=False, repr=False, compare=False)
    #: The scope the call was made in: which cell's or track() block's totals it joins.
    scope: Scope | None = field(default=None, repr=False, compare=False)

    @property
    def tokens_per_s(self) -> float:
        """Output tokens over generation time (after the first token for streams)."""
        span = self.latency_s
        if self.stream and not math.isnan(self.ttft_s):
            span = self.latency_s - self.ttft_s
        if not self.usage.output_tokens or not span or math.isnan(span) or span <= 0:
            return math.nan
        return self.usage.output_tokens / span

    def as_row(self) -> dict[str, Any]:
        """A flat dict, one column per field, in the DataFrame's column order."""
        u = self.usage
        return {
            "time": self.time,
            "cell": self.cell,
            "cell_id": self.cell_id,
            "tag": self.tag,
            "background": self.background,
            "call_id": self.call_id,
            "attempt": self.attempt,
            "provider": self.provider,
            "api": self.api,
            "model": self.model,
            "deployment": self.deployment,
            "host": self.host,
            "stream": self.stream,
            "status": self.status,
            "http_status": self.http_status,
            "input_tokens": u.input_tokens,
            "cached_input_tokens": u.cached_input_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "output_tokens": u.output_tokens,
            "reasoning_tokens": u.reasoning_tokens,
            "total_tokens": u.total_tokens,
            "cost_usd": self.cost_usd,
            "estimated": self.estimated,
            "estimate_method": self.estimate_method,
            "latency_s": self.latency_s,
            "ttft_s": self.ttft_s,
            "tokens_per_s": self.tokens_per_s,
            "source": self.source,
            "error": self.error,
        }


COLUMNS = tuple(CallRecord(0.0, "", "", None, False, "ok", None).as_row())
USAGE_FIELDS = tuple(f.name for f in fields(Usage))
