"""The panel's words: a PanelState as aligned text and as HTML sections. The widget and
the display-handle fallback show the same sections, so both read alike and a test can
find the same numbers in either."""
from __future__ import annotations

import html
import math

from ..monitor import Summary
from ..report import usd
from .panel_state import LastCall, PanelState

TITLE = "tokmagic · LLM usage"
COLUMNS = ("calls", "input", "cached", "output", "reasoning", "cost", "estimated")
#: Sent once with the title, so each redraw carries only the numbers.
STYLE = ("<style>.tokmagic-panel table{border-collapse:collapse;font-variant-numeric:tabular-nums}"
         ".tokmagic-panel th,.tokmagic-panel td{text-align:right;padding:0 .6em}"
         ".tokmagic-panel tbody th{text-align:left;padding-left:0}"
         ".tokmagic-panel .tm-marks{color:#b45309}</style>")


def _cost(s: Summary) -> str:
    text = usd(s.cost_usd)
    if s.estimated:
        text = "~" + text
    return text + (" + ?" if s.unpriced else "")


def _row(s: Summary, estimated_share: float | None) -> list[str]:
    u = s.usage
    share = "" if estimated_share is None else (f"{estimated_share:.0%}" if s.estimated else "-")
    return [f"{s.calls:,}", f"{u.input_tokens:,}", f"{u.cached_input_tokens:,}", f"{u.output_tokens:,}",
            f"{u.reasoning_tokens:,}", _cost(s), share]


def rows(state: PanelState) -> list[tuple[str, str, list[str]]]:
    """(css class, label, cells) for the session and, once a cell made calls, that cell."""
    out = [("tm-session", "session", _row(state.session, state.estimated_share))]
    cell = state.cell_totals
    if cell is not None:
        label = f"cell [{state.cell}]" if state.cell is not None else "cell"
        if cell.tag:
            label += f" · {cell.tag}"
        out.append(("tm-cell", label, _row(cell, None)))
    return out


def last_call(last: LastCall | None) -> str:
    if last is None:
        return "last call: none yet"
    parts = [last.model or "unknown model", f"{last.input_tokens:,} in / {last.output_tokens:,} out tokens"]
    if not math.isnan(last.latency_s):
        parts.append(f"{last.latency_s:,.2f} s")
    if not math.isnan(last.tokens_per_s):
        parts.append(f"{last.tokens_per_s:,.1f} tokens/s")
    if last.status != "ok":
        parts.append(last.status)
    return "last call: " + " · ".join(parts)


def marks(state: PanelState) -> list[str]:
    """What makes the totals less than exact, or over a limit; empty when nothing does."""
    s = state.session
    out = []
    if s.unpriced:
        out.append(f"{s.unpriced:,} call{'s' * (s.unpriced != 1)} unpriced (not in the cost; "
                   "'+ ?' marks it)")
    if s.estimated:
        out.append(f"{s.estimated:,} call{'s' * (s.estimated != 1)} estimated "
                   f"({state.estimated_share:.0%} of tokens; '~' marks their totals)")
    if state.over_budget:
        out.append(f"over budget ({usd(s.cost_usd)} of {usd(state.budget_usd)})")
    if state.stopped:
        out.append("stopped: tokmagic was unloaded, these are the totals as of then")
    return out


def text(state: PanelState) -> str:
    """The panel as plain text: its repr, and what a terminal or a saved notebook shows."""
    table = [("", list(COLUMNS))] + [(label, cells) for _, label, cells in rows(state)]
    width = max(len(label) for label, _ in table)
    widths = [max(len(cells[i]) for _, cells in table) for i in range(len(COLUMNS))]
    lines = [TITLE]
    for label, cells in table:
        lines.append(f"{label:<{width}}  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths)).rstrip())
    lines.append(last_call(state.last))
    lines += [f"! {m}" for m in marks(state)]
    return "\n".join(lines)


# -- HTML sections: the widget has one HTML child per section --------------------------

def title_html() -> str:
    return f"{STYLE}<b>{html.escape(TITLE)}</b>"


def totals_html(state: PanelState) -> str:
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    body = ""
    for css, label, cells in rows(state):
        tds = "".join(f"<td class='tm-{col}'>{html.escape(v)}</td>" for col, v in zip(COLUMNS, cells))
        body += f"<tr class='{css}'><th>{html.escape(label)}</th>{tds}</tr>"
    return f"<table class='tm-totals'><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"


def last_html(state: PanelState) -> str:
    return f"<div class='tm-last'>{html.escape(last_call(state.last))}</div>"


def marks_html(state: PanelState) -> str:
    return "<div class='tm-marks'>" + " · ".join(f"⚠ {html.escape(m)}" for m in marks(state)) + "</div>"


def page(state: PanelState) -> str:
    """All sections in one block: the fallback display and the text/html beside the widget."""
    return (f"<div class='tokmagic-panel'>{title_html()}{totals_html(state)}{last_html(state)}"
            f"{marks_html(state)}</div>")
