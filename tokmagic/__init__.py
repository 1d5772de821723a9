"""tokmagic: every LLM API call made from this Python process, counted and priced.

In Jupyter or IPython: ``%load_ext tokmagic``. In a plain script::

    import tokmagic
    with tokmagic.track("experiment-1"):
        ...                       # calls through openai, anthropic, ... are recorded
    print(tokmagic.summary())
    tokmagic.usage()              # a pandas DataFrame, one row per call
    tokmagic.chart(kind="cost")   # a matplotlib Figure
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from . import capture
from .capture import install, uninstall
from .interaction import LLMInteractionMonitor
from .monitor import Monitor, Summary, session
from .pricing import clear_prices, set_deployment, set_price
from .providers import set_provider
from .tokens import count_tokens

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["usage", "chart", "summary", "track", "reset", "install", "uninstall", "set_price",
           "set_deployment", "set_provider", "clear_prices", "count_tokens", "LLMInteractionMonitor",
           "Monitor", "Summary", "session", "load_ipython_extension", "unload_ipython_extension"]


def usage(by: str | None = None) -> "pd.DataFrame":
    """Every recorded call as a DataFrame, or totals grouped ``by`` tag, cell, model,
    provider, api or status."""
    from .report import frame, grouped

    df = frame(session.records())
    return grouped(df, by) if by else df


def chart(df: "pd.DataFrame | None" = None, kind: str = "tokens", by: str | None = None,
          title: str | None = None) -> "Figure":
    """A matplotlib chart of ``df`` (default: every recorded call, ``usage()``): ``kind``
    is "tokens" (stacked input / cached / output / reasoning per ``by``: cell, tag, model
    or call), "cost" (cumulative over time), "models" (cost and tokens by model) or
    "latency" (latency and tokens/s distributions)."""
    from .ipython.charts import chart as draw

    return draw(usage() if df is None else df, kind=kind, by=by, title=title)


def summary(tag: str | None = None) -> Summary:
    """Totals of the session, or of the calls tagged ``tag``."""
    if tag is None:
        return session.summary()
    return session.summary(lambda r: r.tag == tag, tag=tag)


@contextmanager
def track(tag: str | None = None) -> Iterator[Summary]:
    """Capture the calls made in the block, tagged ``tag``; the yielded Summary is filled
    in when the block ends and counts the calls the block made (its threads and tasks
    included). Capture is on for the block; after it, it is on only if it was before."""
    with capture.held(), session.tracked(tag) as (result, _):
        yield result


def reset() -> None:
    """Forget every recorded call."""
    session.reset()


def load_ipython_extension(ipython) -> None:
    from .ipython.extension import load

    load(ipython)


def unload_ipython_extension(ipython) -> None:
    from .ipython.extension import unload

    unload(ipython)
