"""Records and summaries as people read them: a pandas DataFrame, text and HTML.
pandas is imported only when a frame is asked for."""
from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Iterable, Sequence

from .records import COLUMNS, CallRecord

if TYPE_CHECKING:
    import pandas as pd

    from .monitor import Summary

_INT_COLUMNS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
                "reasoning_tokens", "total_tokens")
_SUM_COLUMNS = (*_INT_COLUMNS, "cost_usd", "latency_s")
GROUPS = ("tag", "cell", "model", "provider", "api", "status", "background")


def frame(records: Iterable[CallRecord]) -> "pd.DataFrame":
    """One row per HTTP exchange; token columns are ints, cost is NaN when unknown."""
    import pandas as pd

    df = pd.DataFrame([r.as_row() for r in records], columns=list(COLUMNS))
    df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
    for col in _INT_COLUMNS:
        df[col] = df[col].astype("int64")
    df["cell"] = df["cell"].astype("Int64")
    df["http_status"] = df["http_status"].astype("Int64")
    for col in ("cost_usd", "latency_s", "ttft_s", "tokens_per_s"):
        df[col] = df[col].astype("float64")
    df["stream"] = df["stream"].astype(bool)
    df["estimated"] = df["estimated"].astype(bool)
    return df


def grouped(df: "pd.DataFrame", by: str | Sequence[str]) -> "pd.DataFrame":
    """Totals per group: calls and HTTP attempts, tokens, cost (NaN if any call in the
    group is unpriced), and how many calls were estimated."""
    import pandas as pd

    by = [by] if isinstance(by, str) else list(by)
    for name in by:
        if name not in GROUPS:
            raise ValueError(f"cannot group by {name!r}; use one of: {', '.join(GROUPS)}")
    g = df.groupby(by, dropna=False, sort=True)
    out = g[list(_SUM_COLUMNS)].sum(min_count=1)
    out[list(_INT_COLUMNS)] = out[list(_INT_COLUMNS)].fillna(0).astype("int64")
    out["cost_usd"] = g["cost_usd"].apply(lambda s: s.sum() if s.notna().all() else math.nan)
    # attempts of one logical call (SDK retries) share a call_id; rows without one each count
    calls = df.assign(_call=df["call_id"].fillna(pd.Series(df.index.astype(str), index=df.index)))
    out.insert(0, "calls", calls.groupby(by, dropna=False, sort=True)["_call"].nunique())
    out.insert(1, "attempts", g.size())
    out["estimated"] = g["estimated"].sum().astype("int64")
    return out


def usd(value: float) -> str:
    """A cost as people read it: cents to four places, fractions of a cent to six, and
    what rounds to nothing as below the smallest step rather than as $0."""
    if math.isnan(value):
        return "unknown"
    if value == 0:
        return "$0"
    if value < 0.0000005:
        return "<$0.000001"
    return f"${value:,.6f}" if value < 0.01 else f"${value:,.4f}"


def _facts(s: "Summary") -> list[tuple[str, str]]:
    u = s.usage
    cost = usd(s.cost_usd)
    if s.unpriced:
        cost += f" + {s.unpriced} unpriced call{'s' * (s.unpriced != 1)}"
    if s.estimated:
        cost = "~" + cost
    calls = f"{s.calls:,}" + (f" ({s.attempts:,} attempts)" if s.attempts != s.calls else "")
    rows = [("calls", calls),
            ("input tokens", f"{u.input_tokens:,}"
             + (f" ({u.cached_input_tokens:,} cached)" if u.cached_input_tokens else "")
             + (f" ({u.cache_write_tokens:,} cache write)" if u.cache_write_tokens else "")),
            ("output tokens", f"{u.output_tokens:,}"
             + (f" ({u.reasoning_tokens:,} reasoning)" if u.reasoning_tokens else "")),
            ("cost", cost),
            ("latency", f"{s.latency_s:,.2f} s")]
    notes = [f"{n} {what}" for n, what in ((s.estimated, "estimated"), (s.errors, "errors"),
                                           (s.interrupted, "interrupted"), (s.unparsed, "unparsed")) if n]
    if s.running:
        notes.append(f"{s.running} still running, not counted here (see %llm_usage once done)")
    if notes:
        rows.append(("note", ", ".join(notes)))
    return rows


def summary_text(s: "Summary") -> str:
    title = f"LLM usage [{s.tag}]" if s.tag else "LLM usage"
    facts = _facts(s)
    width = max(len(k) for k, _ in facts)
    return "\n".join([title] + [f"  {k:<{width}}  {v}" for k, v in facts])


def summary_html(s: "Summary") -> str:
    title = html.escape(f"LLM usage [{s.tag}]" if s.tag else "LLM usage")
    rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                   f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in _facts(s))
    return f"<div class='tokmagic-summary'><b>{title}</b><table>{rows}</table></div>"
