"""The live panel in IPython: session, cell and last-call totals that move while a cell
runs. In a Jupyter kernel it is an ipywidgets panel, built once and then only given new
values; elsewhere it is a text/HTML display. Every display of it carries text/plain and
text/html beside the widget view, so a frontend without a widget manager (nbconvert,
some VS Code setups) shows the numbers instead of a blank or an error."""
from __future__ import annotations

import importlib.util
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from IPython.display import display, update_display

from ..monitor import Monitor, session
from ..warn import warn_once
from . import panel_text
from .panel_state import UPDATES_PER_S, LiveUpdates, PanelState

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def in_kernel(shell: InteractiveShell) -> bool:
    """Whether a Jupyter frontend is on the other end (ipykernel's shell has a kernel):
    only there can a display be redrawn in place or a widget be shown."""
    return getattr(shell, "kernel", None) is not None


def widgets_usable(shell: InteractiveShell) -> bool:
    """Whether the panel can be a widget: a kernel, and ipywidgets installed. Whether the
    frontend renders widgets is unknowable from here; the text/html beside the view
    covers the frontends that do not."""
    return in_kernel(shell) and importlib.util.find_spec("ipywidgets") is not None


class PanelWidget:
    """The ipywidgets form of the panel: one HTML child per section, built once; a redraw
    only assigns new values, and an unchanged section sends nothing."""

    def __init__(self) -> None:
        import ipywidgets as w

        self.title = w.HTML(panel_text.title_html())
        self.totals, self.last, self.marks = w.HTML(), w.HTML(), w.HTML()
        self.box = w.VBox([self.title, self.totals, self.last, self.marks],
                          layout=w.Layout(border="1px solid #d0d7de", padding="4px 10px", width="max-content"))
        self.box.add_class("tokmagic-panel")

    def draw(self, state: PanelState) -> None:
        self.totals.value = panel_text.totals_html(state)
        self.last.value = panel_text.last_html(state)
        self.marks.value = panel_text.marks_html(state)

    def view(self) -> dict[str, Any]:
        return {"version_major": 2, "version_minor": 0, "model_id": self.box.model_id}


def _build_widget() -> PanelWidget | None:
    """The widget, or None (the text/HTML display) when ipywidgets fails to load."""
    try:
        return PanelWidget()
    except Exception as exc:  # a broken install must not stop %load_ext
        warn_once("panel-widget", f"tokmagic: the live panel cannot use ipywidgets ({exc!r}); "
                                  "it shows as text/HTML instead.")
        return None


class LivePanel:
    """The session's panel in one shell: drawn while calls arrive (at most
    ``UPDATES_PER_S`` times a second, from a background thread) and once more when each
    cell ends. It reads the monitor and never writes to it.

    Modes: a widget in a kernel with ipywidgets; a display redrawn through its display
    handle in a kernel without; a snapshot per ``show()`` in a terminal, which cannot
    redraw an earlier output in place.
    """

    def __init__(self, shell: InteractiveShell, monitor: Monitor = session, widgets: bool | None = None,
                 interval: float = 1 / UPDATES_PER_S) -> None:
        self.shell = shell
        self.display_id = f"tokmagic-panel-{os.urandom(8).hex()}"
        use_widgets = widgets_usable(shell) if widgets is None else widgets
        self.widget = _build_widget() if use_widgets else None
        self.live = self.widget is not None or in_kernel(shell)
        self.updates = LiveUpdates(monitor, self._draw, interval=interval)
        #: The text last sent through the display handle, to skip identical updates.
        self._published: str | None = None
        if self.live:
            self.updates.start()
            shell.events.register("post_run_cell", self.post_run_cell)

    # -- showing ---------------------------------------------------------------------
    def show(self) -> None:
        """Display the panel (again: every display of it is kept up to date)."""
        # A widget is drawn under the redraw lock; a fallback is drawn by this display.
        state = self.updates.flush() if self.widget is not None else self.updates.read()
        self._published = panel_text.text(state)
        display(self._bundle(state), raw=True, display_id=self.display_id)

    def _bundle(self, state: PanelState) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": panel_text.text(state), "text/html": panel_text.page(state)}
        if self.widget is not None:
            bundle[WIDGET_VIEW] = self.widget.view()
        return bundle

    def _publish(self, state: PanelState) -> None:
        """Redraw every display of the panel through its handle, if its text changed."""
        text = panel_text.text(state)
        if text != self._published:
            self._published = text
            update_display(self._bundle(state), raw=True, display_id=self.display_id)

    def __repr__(self) -> str:
        return panel_text.text(self.updates.read())

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))

    # -- updating --------------------------------------------------------------------
    def _draw(self, state: PanelState) -> None:
        if self.widget is not None:
            self.widget.draw(state)
        else:
            self._publish(state)

    def post_run_cell(self, result: Any) -> None:
        """The final redraw of a cell."""
        self._redraw_final()

    def close(self) -> None:
        """Stop redrawing, after a last redraw that says the panel has stopped, so that a
        panel left on the page is not taken for a live one. Safe to call twice."""
        self.updates.stop()
        try:
            self.shell.events.unregister("post_run_cell", self.post_run_cell)
        except ValueError:  # never registered (terminal), or removed already
            return
        self._redraw_final(stopped=True)

    def _redraw_final(self, stopped: bool = False) -> None:
        """Draw now. A widget panel also refreshes its text/html, so a saved notebook and a
        frontend without widgets show the same numbers."""
        try:
            if stopped:
                state = replace(self.updates.read(), stopped=True)
                self._draw(state)
            else:
                state = self.updates.flush()
            if self.widget is not None:
                self._publish(state)
        except Exception as exc:
            warn_once("panel-draw", f"tokmagic: the live panel could not redraw ({exc!r}); "
                                    "the calls are still recorded, see %llm_usage.")


#: The panel of the shell tokmagic is loaded into; None until first shown.
_current: LivePanel | None = None


def show(shell: InteractiveShell) -> LivePanel:
    """Display the session's panel in ``shell``, creating it on first use."""
    global _current
    if _current is None or _current.shell is not shell:
        close()
        _current = LivePanel(shell)
    _current.show()
    return _current


def close() -> None:
    """Stop the session's panel, if any."""
    global _current
    panel, _current = _current, None
    if panel is not None:
        panel.close()
