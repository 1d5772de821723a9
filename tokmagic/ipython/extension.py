"""``%load_ext tokmagic``: turn capture on, add the magics, tell the session monitor
which cell is running so every call lands in the right row, and show the live panel."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import capture
from ..monitor import session
from ..records import Scope
from ..warn import warn_once
from . import panel
from .magics import TokMagic

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

EVENTS = ("pre_run_cell", "post_run_cell")


class CellHooks:
    """The pre/post_run_cell hooks of one shell.

    ``%%llm_track`` runs its body with ``run_cell``, which fires these events again
    inside the outer cell: only the outermost cell sets the scope. Cells are paired by
    their ExecutionInfo because IPython fires post_run_cell, but not pre_run_cell, for an
    empty cell; a bare depth counter would close the outer cell early.
    """

    def __init__(self, shell: InteractiveShell) -> None:
        self.shell = shell
        #: One entry per running cell, outermost first: its ExecutionInfo and the scope
        #: to restore when it ends (None for a nested cell, which changed nothing).
        self._running: list[tuple[Any, Scope | None]] = []

    def pre_run_cell(self, info: Any) -> None:
        try:
            if self._running:
                self._running.append((info, None))
                return
            previous = session.scope
            self._running.append((info, previous))
            # Keep the tag already in force: %%llm_track run outside any cell (e.g.
            # ``ip.run_cell_magic``) or tokmagic.track() around ``ip.run_cell``.
            session.scope = Scope(cell=self._count(info), cell_id=getattr(info, "cell_id", None),
                                  tag=previous.tag, parent=previous)
        except Exception as exc:
            _hook_failed(exc)

    def post_run_cell(self, result: Any) -> None:
        try:
            if not self._running:
                return
            # An empty cell gets post_run_cell alone; result is None if IPython itself failed.
            if result is not None and result.info is not self._running[-1][0]:
                return
            _, previous = self._running.pop()
            if previous is not None:
                # threads it left running now make background calls; streams it left
                # open are recorded as interrupted
                session.end_scope(session.scope)
                session.scope = previous
        except Exception as exc:
            _hook_failed(exc)

    def close(self) -> None:
        """Restore the scope from before the running cell (``%unload_ext`` runs in one, and
        its post_run_cell hook is gone by then)."""
        if self._running:
            session.scope = self._running[0][1] or Scope()
            self._running = []

    def _count(self, info: Any) -> int | None:
        """The ``In [n]`` number of the starting cell; None for a cell kept out of history,
        which has none. The displayhook's ``prompt_count`` is the number IPython gives the
        cell's output: ``execution_count`` itself is already n + 1 here since IPython 9.x
        (ipython/ipython#15088) but is n in IPython 8."""
        return self.shell.displayhook.prompt_count if info.store_history else None


def _hook_failed(exc: Exception) -> None:
    warn_once("ipython-hook", f"tokmagic: could not tell which cell made a call ({exc!r}); "
                              "calls are still recorded, without their cell.")


#: The hooks of the shell tokmagic is loaded into, None while unloaded.
_hooks: CellHooks | None = None


def load(ip: InteractiveShell) -> None:
    """Capture calls, add the magics and the cell hooks, show the panel (unless
    ``TokMagic.panel`` is off); a second load changes nothing."""
    global _hooks
    if _hooks is not None:
        if _hooks.shell is ip:
            return
        unload(_hooks.shell)
    capture.install()
    # The magics stay registered after %unload_ext: reusing them keeps %config settings
    # across %reload_ext and adds no second configurable.
    if not isinstance(ip.magics_manager.registry.get(TokMagic.__name__), TokMagic):
        ip.register_magics(TokMagic)
    hooks = CellHooks(ip)
    for event in EVENTS:
        ip.events.register(event, getattr(hooks, event))
    _hooks = hooks
    if ip.magics_manager.registry[TokMagic.__name__].panel:
        try:
            panel.show(ip)
        except Exception as exc:  # the panel is a view: capture must start without it
            warn_once("panel-show", f"tokmagic: could not show the live panel ({exc!r}); calls are "
                                    "still recorded, see %llm_usage.")


def unload(ip: InteractiveShell) -> None:
    """Stop capturing, remove the cell hooks and stop the panel."""
    global _hooks
    capture.uninstall()
    panel.close()
    hooks, _hooks = _hooks, None
    if hooks is None:
        return
    for event in EVENTS:
        try:
            hooks.shell.events.unregister(event, getattr(hooks, event))
        except ValueError:  # removed by someone else already
            pass
    hooks.close()
