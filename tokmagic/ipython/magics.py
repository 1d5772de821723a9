"""The magics: ``%%llm_track``, ``%llm_usage`` and ``%llm_reset``. Each parses its line,
delegates to the public API and shows the result."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display
from traitlets import Bool

import tokmagic

from .. import capture
from ..report import GROUPS

if TYPE_CHECKING:
    import pandas as pd


@magics_class
class TokMagic(Magics):
    """Token usage and cost of the LLM calls made in this kernel."""

    summary = Bool(True, help="Whether %%llm_track displays the cell's usage summary "
                              "(-q silences one cell).").tag(config=True)

    @magic_arguments()
    @argument("tag", nargs="?", help="Tag the cell's calls with TAG (their `tag` column).")
    @argument("-q", "--quiet", action="store_true", help="Do not display the summary.")
    @argument("-o", "--output", metavar="VAR",
              help="Store the cell's Summary in the variable VAR.")
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
        """
        args = parse_argstring(self.llm_track, line)
        if not capture.installed():
            raise UsageError("tokmagic is not capturing calls; run %load_ext tokmagic first.")
        if self._awaits_in_running_loop(cell):
            raise UsageError("%%llm_track cannot run top-level await in a Jupyter kernel; "
                             "use `with tokmagic.track(TAG):` inside the cell instead.")
        shell = self.shell
        outer = shell.displayhook.exec_result
        with tokmagic.track(args.tag) as summary:
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

    def _awaits_in_running_loop(self, cell: str) -> bool:
        """Whether the body needs an event loop while one already runs this cell (as in
        ipykernel): run_cell would fail with "This event loop is already running"."""
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
        args = parse_argstring(self.llm_usage, line)
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
        parse_argstring(self.llm_reset, line)
        tokmagic.reset()
        print("tokmagic: usage reset, no calls recorded.")

