"""The magics: ``%%llm_track``, ``%llm_usage``, ``%llm_reset``, ``%llm_panel`` and
``%llm_chart``. Each parses its line, delegates to the public API or the display layer,
and shows the result."""
from __future__ import annotations

import argparse
import keyword
import shlex
from typing import TYPE_CHECKING, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display
from traitlets import Bool

import tokmagic

from .. import capture
from ..monitor import session
from ..report import GROUPS
from . import panel
from .charts import BY, KINDS

if TYPE_CHECKING:
    import pandas as pd


@magics_class
class TokMagic(Magics):
    """Token usage and cost of the LLM calls made in this kernel."""

    summary = Bool(True, help="Whether %%llm_track displays the cell's usage summary "
                              "(-q silences one cell).").tag(config=True)
    panel = Bool(True, help="Whether %load_ext shows the live usage panel "
                            "(%llm_panel shows it whatever this says).").tag(config=True)

    @magic_arguments()
    @argument("tag", nargs="?", help="Tag the cell's calls with TAG (their `tag` column).")
    @argument("-q", "--quiet", action="store_true", help="Do not display the summary.")
    @argument("-o", "--output", metavar="VAR",
              help="Store the cell's Summary in the variable VAR.")
    @argument("--chart", action="store_true",
              help="After the summary, chart the tokens of each of the cell's calls.")
    @cell_magic
    def llm_track(self, line: str, cell: str) -> None:
        """Run the cell, tag its LLM calls, then show their tokens, cost and latency.

        The summary counts only the calls this cell made. An exception in the cell shows
        as usual, fails the cell, and the summary still counts the calls made before it.

        Examples
        --------
        ::

            %%llm_track baseline
            client.chat.completions.create(model="gpt-4o-mini", messages=msgs)

            %%llm_track prompt-v2 -q -o s
            run_eval()          # afterwards s.calls, s.usage.output_tokens, s.cost_usd

            %%llm_track sweep --chart
            for t in (0, 0.5, 1): ask(temperature=t)
        """
        args = _arguments(self.llm_track, line, "%%llm_track")
        tag = _unquoted(args.tag)
        if not capture.installed():
            raise UsageError("tokmagic is not capturing calls; run %load_ext tokmagic first.")
        if self._awaits_in_running_loop(cell):
            raise UsageError("%%llm_track cannot run top-level await in a Jupyter kernel; "
                             "use `with tokmagic.track(TAG):` inside the cell instead.")
        shell = self.shell
        outer = shell.displayhook.exec_result
        with session.tracked(tag) as (summary, calls):
            inner = shell.run_cell(cell)
        # run_cell shows the body's exception and keeps it in its own result; carry it
        # to this cell's result (the displayhook holds it while the cell runs) so the cell
        # fails, and Run All stops, without a second traceback.
        if outer is not None and not inner.success:
            outer.error_in_exec = inner.error_in_exec or inner.error_before_exec
        if args.output:
            shell.user_ns[args.output] = summary
        if self.summary and not args.quiet:
            display(summary)
        if args.chart:
            from ..report import frame

            title = f"LLM tokens per call [{tag}]" if tag else "LLM tokens per call"
            display(tokmagic.chart(frame(calls), kind="tokens", by="call", title=title))

    def _awaits_in_running_loop(self, cell: str) -> bool:
        """Whether the body needs an event loop while one already runs this cell (as in
        ipykernel): run_cell would fail with "This event loop is already running"."""
        import asyncio  # here, not at import: it pulls in ssl and subprocess, slowing %load_ext

        try:
            asyncio.get_running_loop()
            transformed = self.shell.transform_cell(cell)
        except Exception:  # no running loop, or input run_cell will report itself
            return False
        return self.shell.should_run_async(cell, transformed_cell=transformed, preprocessing_exc_tuple=None)

    @magic_arguments()
    @argument("--by", choices=GROUPS, help="Totals per group instead of one row per call.")
    @line_magic
    def llm_usage(self, line: str) -> "pd.DataFrame":
        """Every recorded LLM call as a pandas DataFrame, or totals per group.

        Examples
        --------
        ::

            %llm_usage                  # one row per call: tokens, cost, cell, tag, ...
            %llm_usage --by tag         # calls, tokens and cost per %%llm_track tag
            df = %llm_usage --by cell
        """
        args = _arguments(self.llm_usage, line, "%llm_usage")
        return tokmagic.usage(by=args.by)

    @magic_arguments()
    @line_magic
    def llm_reset(self, line: str) -> None:
        """Forget every recorded LLM call of this session.

        Examples
        --------
        ::

            %llm_reset
        """
        _arguments(self.llm_reset, line, "%llm_reset")
        tokmagic.reset()
        print("tokmagic: usage reset, no calls recorded.")


    @magic_arguments()
    @line_magic
    def llm_panel(self, line: str) -> None:
        """Show the live usage panel: session totals, the running cell's totals and tag,
        and the last call, updated a few times a second while a cell runs.

        ``%load_ext tokmagic`` shows it already, unless ``%config TokMagic.panel = False``.
        Without a widget frontend it is a text/HTML display, refreshed in place where the
        frontend allows (a terminal shows a snapshot).

        Examples
        --------
        ::

            %llm_panel
        """
        _arguments(self.llm_panel, line, "%llm_panel")
        if not capture.installed():
            raise UsageError("tokmagic is not capturing calls; run %load_ext tokmagic first.")
        panel.show(self.shell)

    @magic_arguments()
    @argument("--kind", choices=KINDS, default="tokens",
              help="tokens: stacked tokens per cell, tag, model or call; cost: cumulative cost "
                   "over time; models: cost and tokens by model; latency: latency and tokens/s "
                   "distributions. Default: tokens.")
    @argument("--by", choices=BY, help="With --kind tokens: one bar per cell (default), tag, model or call.")
    @argument("-o", "--output", metavar="VAR", help="Store the matplotlib Figure in the variable VAR.")
    @line_magic
    def llm_chart(self, line: str) -> None:
        """Chart the session's LLM usage with matplotlib.

        The chart is drawn from ``tokmagic.usage()``; ``tokmagic.chart(df, kind=...)``
        draws the same charts from any usage DataFrame (filtered, or read back from disk).

        Examples
        --------
        ::

            %llm_chart                        # tokens per cell: input, cached, output, reasoning
            %llm_chart --kind tokens --by tag
            %llm_chart --kind cost -o fig     # then fig.savefig("cost.png")
            %llm_chart --kind models
            %llm_chart --kind latency
        """
        args = _arguments(self.llm_chart, line, "%llm_chart")
        if args.by and args.kind != "tokens":
            raise UsageError("--by applies to --kind tokens only; leave it out for other kinds.")
        figure = tokmagic.chart(kind=args.kind, by=args.by)
        if args.output:
            self.shell.user_ns[args.output] = figure
        display(figure)


def _arguments(magic: Callable, line: str, name: str) -> argparse.Namespace:
    """The magic's parsed line. Every bad line is a one-line UsageError: argparse's errors
    are already; shlex's ValueError for an unbalanced quote and a ``-o`` VAR that is no
    variable name (``-o s.attr`` would otherwise store nothing anyone can read) become one."""
    try:
        args = parse_argstring(magic, line)
    except ValueError as exc:
        raise UsageError(f"{name}: {str(exc).lower()} in {line.strip()!r}; "
                         "close the quote or remove it.") from None
    output = getattr(args, "output", None)
    if output is not None and (not output.isidentifier() or keyword.iskeyword(output)):
        raise UsageError(f"{name}: -o takes a variable name, got {output!r}; "
                         "pass a Python identifier, e.g. -o result.")
    return args


def _unquoted(tag: str | None) -> str | None:
    """A tag as the shell would read it: IPython's argument splitter keeps the quotes
    of ``%%llm_track 'prompt v2'``."""
    if not tag or tag[0] not in "'\"":
        return tag
    try:
        return " ".join(shlex.split(tag))
    except ValueError:  # an unbalanced quote: the tag as typed
        return tag
