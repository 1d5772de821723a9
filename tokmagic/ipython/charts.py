"""Usage as pictures: one matplotlib chart per kind, each drawn from a usage DataFrame
(``tokmagic.usage()``, or a filtered or saved copy of it) and returned as a Figure to
show or save. matplotlib and pandas are imported only when a chart is drawn."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from ..report import usd

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

KINDS = ("tokens", "cost", "models", "latency")
#: What the tokens chart puts one bar on.
BY = ("cell", "tag", "model", "call")
#: The token stack, bottom to top: label and colour. The four parts add up to a call's
#: total tokens (input includes cached input, output includes reasoning).
PARTS = (("input", "#4c78a8"), ("cached input", "#9ecae9"), ("output", "#f58518"), ("reasoning", "#e45756"))
#: Bars with more than this many neighbours get no total printed above them.
_LABELLED_BARS = 24


def chart(df: "pd.DataFrame", kind: str = "tokens", by: str | None = None, title: str | None = None) -> "Figure":
    """The ``kind`` chart of ``df``: tokens (per ``by``, default cell), cost, models or
    latency."""
    if kind not in KINDS:
        raise ValueError(f"unknown chart kind {kind!r}; use one of: {', '.join(KINDS)}")
    if by is not None and kind != "tokens":
        raise ValueError(f"by= applies to kind='tokens' only; leave it out for kind={kind!r}")
    by = by or "cell"
    if by not in BY:
        raise ValueError(f"cannot chart tokens by {by!r}; use one of: {', '.join(BY)}")
    if kind == "tokens":
        return tokens(df, by=by, title=title)
    draw: dict[str, Callable[..., Figure]] = {"cost": cost, "models": models, "latency": latency}
    return draw[kind](df, title=title)


# -- the four kinds --------------------------------------------------------------------

def tokens(df: "pd.DataFrame", by: str = "cell", title: str | None = None) -> "Figure":
    """Stacked bars of input, cached input, output and reasoning tokens per cell, tag,
    model or call."""
    _need(df, "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens",
          *(() if by == "call" else (by,)))
    title = title or f"LLM tokens per {by}"
    fig, ax = _figure(1, title, empty=df.empty)
    if df.empty:
        return fig
    parts = _token_parts(df)
    if by == "call":
        labels = [f"#{i}" for i in range(1, len(df) + 1)]
    else:
        parts = parts.groupby(df[by].to_numpy(), dropna=False, sort=True).sum()
        labels = [_label(by, key) for key in parts.index]
    _stack(ax, labels, parts, horizontal=False)
    ax.set_xlabel(by)
    ax.set_ylabel("tokens")
    return fig


def cost(df: "pd.DataFrame", title: str | None = None) -> "Figure":
    """The session's cost adding up call by call over time."""
    import matplotlib.dates as mdates
    import pandas as pd

    _need(df, "time", "cost_usd")
    fig, ax = _figure(1, title or "Cumulative LLM cost", empty=df.empty)
    if df.empty:
        return fig
    ordered = df.assign(time=pd.to_datetime(df["time"], utc=True)).sort_values("time", kind="stable")
    running = ordered["cost_usd"].fillna(0).cumsum()
    ax.step(ordered["time"], running, where="post", color=PARTS[0][1], marker="o", markersize=3)
    unpriced = int(ordered["cost_usd"].isna().sum())
    if unpriced:
        ax.set_title(f"{unpriced:,} unpriced call{'s' * (unpriced != 1)} not included", fontsize="small")
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("cost (USD)")
    ax.yaxis.set_major_formatter(_dollars())
    ax.set_ylim(bottom=0)
    return fig


def models(df: "pd.DataFrame", title: str | None = None) -> "Figure":
    """Cost and tokens per model, side by side."""
    _need(df, "model", "cost_usd", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
    fig, (left, right) = _figure(2, title or "LLM cost and tokens by model", empty=df.empty)
    if df.empty:
        return fig
    keys = df["model"].to_numpy()
    spent = df.groupby(keys, dropna=False, sort=True)["cost_usd"].sum(min_count=1)
    labels = [_label("model", key) for key in spent.index]
    bars = left.barh(labels, spent.fillna(0), color=PARTS[0][1])
    left.bar_label(bars, labels=["unpriced" if math.isnan(v) else usd(v) for v in spent],
                   padding=2, fontsize="small")
    left.margins(x=0.25)
    left.invert_yaxis()
    left.set_xlabel("cost (USD)")
    left.xaxis.set_major_locator(_few_ticks())
    left.xaxis.set_major_formatter(_dollars())
    _stack(right, labels, _token_parts(df).groupby(keys, dropna=False, sort=True).sum(), horizontal=True)
    right.set_xlabel("tokens")
    right.tick_params(labelleft=False)
    return fig


def latency(df: "pd.DataFrame", title: str | None = None) -> "Figure":
    """How long calls took and how fast they produced output: two histograms."""
    _need(df, "latency_s", "tokens_per_s")
    fig, (left, right) = _figure(2, title or "LLM call latency and output speed", empty=df.empty)
    if df.empty:
        return fig
    for ax, column, unit, colour in ((left, "latency_s", "s", PARTS[0][1]),
                                     (right, "tokens_per_s", "tokens/s", PARTS[2][1])):
        values = df[column].dropna()
        ax.set_xlabel(f"{column.split('_')[0] if unit == 's' else 'output speed'} ({unit})")
        ax.set_ylabel("calls")
        if values.empty:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="#666666")
            continue
        ax.hist(values, bins=min(30, max(5, len(values) // 2)), color=colour)
        median = float(values.median())
        ax.axvline(median, color="#333333", linestyle="--", linewidth=1)
        ax.annotate(f"median {median:,.2f} {unit}", (median, 1), xycoords=("data", "axes fraction"),
                    xytext=(4, -12), textcoords="offset points", fontsize="small")
        ax.yaxis.set_major_locator(_integer_ticks())
    return fig


# -- shared pieces ---------------------------------------------------------------------

def _need(df: "pd.DataFrame", *columns: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"the frame has no {', '.join(map(repr, missing))} column; "
                         "chart a frame from tokmagic.usage().")


def _figure(ncols: int, title: str, empty: bool) -> tuple["Figure", "Axes"]:
    """A new figure kept out of pyplot's list of open figures, so a notebook shows it
    once (where it is displayed or returned), not again when the cell ends. pyplot is
    still what makes the figure: in a kernel it sets up inline PNG display."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(5.5 + 4 * (ncols - 1), 4), layout="constrained")
    plt.close(fig)
    fig.suptitle(title, fontweight="bold")
    for ax in [axes] if ncols == 1 else axes:
        ax.spines[["top", "right"]].set_visible(False)
        if empty:
            ax.set_axis_off()
    if empty:
        fig.text(0.5, 0.5, "No LLM calls recorded yet.", ha="center", va="center", color="#666666")
    return fig, axes


def _token_parts(df: "pd.DataFrame") -> "pd.DataFrame":
    """The four stacked parts of each call's tokens, never negative."""
    import pandas as pd

    cached, reasoning = df["cached_input_tokens"].fillna(0), df["reasoning_tokens"].fillna(0)
    return pd.DataFrame({
        "input": df["input_tokens"].fillna(0) - cached,
        "cached input": cached,
        "output": df["output_tokens"].fillna(0) - reasoning,
        "reasoning": reasoning,
    }).clip(lower=0).astype("int64")


def _stack(ax: "Axes", labels: list[str], parts: "pd.DataFrame", horizontal: bool) -> None:
    """Stacked bars of ``parts`` (one column per PARTS entry), totals printed when few."""
    import numpy as np

    base = np.zeros(len(labels))
    bars = None
    for name, colour in PARTS:
        values = parts[name].to_numpy()
        if horizontal:
            bars = ax.barh(labels, values, left=base, label=name, color=colour)
        else:
            bars = ax.bar(labels, values, bottom=base, label=name, color=colour)
        base = base + values
    if bars is not None and len(labels) <= _LABELLED_BARS:
        ax.bar_label(bars, labels=[f"{int(t):,}" for t in base], padding=2, fontsize="small")
    axis = ax.xaxis if horizontal else ax.yaxis
    axis.set_major_formatter(_thousands())
    if horizontal:
        ax.invert_yaxis()
    elif len(labels) > 8:
        ax.tick_params(axis="x", labelrotation=45)
    ax.margins(**({"x": 0.12} if horizontal else {"y": 0.1}))
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), frameon=False, fontsize="small")


def _label(by: str, key: object) -> str:
    import pandas as pd

    if key is None or (not isinstance(key, str) and pd.isna(key)):
        return {"cell": "no cell", "tag": "untagged", "model": "unknown"}.get(by, "none")
    return f"[{int(key)}]" if by == "cell" else str(key)


def _thousands():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:,.0f}")


def _dollars():
    """Dollar ticks with as many decimals as the largest amount on the axis needs, the
    same for every tick: $0.50 $1.00 $1.50, or $0.000100 $0.000200."""
    from matplotlib.ticker import Formatter

    class Dollars(Formatter):
        def format_ticks(self, values):
            top = max((abs(v) for v in values), default=0)
            decimals = 2 if not top else min(8, max(2, 2 - math.floor(math.log10(top))))
            return [self._format(v, decimals) for v in values]

        def __call__(self, x, pos=None):
            return self.format_ticks([x])[0]

        @staticmethod
        def _format(v: float, decimals: int) -> str:
            return "$0" if v == 0 else f"${v:,.{decimals}f}"

    return Dollars()


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _few_ticks():
    """Room for wide labels such as $0.000150 on a narrow axis."""
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=3)
