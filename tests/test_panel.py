"""The live panel and the chart magics in a real InteractiveShell, which is what a
terminal gives: no kernel, so no widgets. The fallback display carries text/plain and
text/html; run as if in a kernel it is redrawn through its display handle; as a widget it
is built once and then only given new values."""
from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config

import tokmagic
from tokmagic.ipython import panel
from tokmagic.monitor import session

from .test_ipython import run

VIEW = "application/vnd.jupyter.widget-view+json"
BASIC_CALL = "r = chat('openai-chat-basic')"  # 15 input / 19 output tokens


@pytest.fixture
def kernel_like(ip, monkeypatch):
    """Make the next panel believe it runs in a kernel, with or without ipywidgets."""

    def pretend(widgets: bool) -> None:
        monkeypatch.setattr(panel, "in_kernel", lambda shell: True)
        monkeypatch.setattr(panel, "widgets_usable", lambda shell: widgets)
        panel.close()  # the terminal panel %load_ext made

    return pretend


def calls_shown(text: str) -> int:
    """The session row's call count in the panel's text."""
    row = next(line for line in text.splitlines() if line.startswith("session"))
    return int(row.split()[1].replace(",", ""))


def test_load_ext_shows_the_panel_as_text_and_html():
    InteractiveShell.clear_instance()
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    try:
        with capture_output() as io:
            shell.run_line_magic("load_ext", "tokmagic")
        (shown,) = io.outputs
        assert set(shown.data) == {"text/plain", "text/html"}
        assert shown.data["text/plain"].startswith("tokmagic · LLM usage")
        assert "<div class='tokmagic-panel'>" in shown.data["text/html"]
        assert calls_shown(shown.data["text/plain"]) == 0
    finally:
        shell.run_line_magic("unload_ext", "tokmagic")
        InteractiveShell.clear_instance()


def test_llm_panel_in_a_terminal_shows_a_snapshot_and_is_not_redrawn(ip):
    live = panel._current
    assert live is not None and live.widget is None and not live.live
    assert live.updates._thread is None and live.post_run_cell not in ip.events.callbacks["post_run_cell"]
    with capture_output() as io:
        run(ip, BASIC_CALL)
        run(ip, BASIC_CALL)
    assert io.outputs == []  # a terminal cannot redraw in place: no output per cell
    with capture_output() as io:
        run(ip, "%llm_panel")
    (shown,) = io.outputs
    assert set(shown.data) == {"text/plain", "text/html"}
    assert calls_shown(shown.data["text/plain"]) == 2
    assert "<td class='tm-calls'>2</td>" in shown.data["text/html"]
    assert "cell [3]" in shown.data["text/plain"]  # the latest cell that made calls
    assert repr(live) == shown.data["text/plain"]


def test_without_widgets_in_a_kernel_the_panel_is_redrawn_through_its_handle(ip, kernel_like):
    """A kernel without ipywidgets: the display handle carries every redraw, and the
    final one lands when the cell ends."""
    kernel_like(widgets=False)
    with capture_output() as io:
        run(ip, "%llm_panel")
        run(ip, f"{BASIC_CALL}\n{BASIC_CALL}\n{BASIC_CALL}")
    live = panel._current
    assert live.live and live.widget is None
    first, *updates = io.outputs
    assert not first.update and calls_shown(first.data["text/plain"]) == 0
    assert updates and all(u.update and set(u.data) == {"text/plain", "text/html"} for u in updates)
    assert {u.transient["display_id"] for u in [first, *updates]} == {live.display_id}
    assert calls_shown(updates[-1].data["text/plain"]) == 3
    assert "<td class='tm-calls'>3</td>" in updates[-1].data["text/html"]
    with capture_output() as io:
        run(ip, "x = 1")
    assert io.outputs == []  # nothing changed, nothing sent


def test_the_widget_is_built_once_and_only_its_values_change(ip, kernel_like):
    kernel_like(widgets=True)
    with capture_output() as io:
        run(ip, "%llm_panel")
    live = panel._current
    (shown,) = io.outputs
    assert set(shown.data) == {VIEW, "text/plain", "text/html"}
    assert shown.data[VIEW]["model_id"] == live.widget.box.model_id
    children = list(live.widget.box.children)
    with capture_output() as io:
        run(ip, f"{BASIC_CALL}\n{BASIC_CALL}")
    assert list(live.widget.box.children) == children
    assert "<td class='tm-calls'>2</td>" in live.widget.totals.value
    assert "gpt-3.5-turbo-0125 · 15 in / 19 out tokens" in live.widget.last.value
    # The end of the cell refreshes the text beside the view, for saved notebooks.
    (refresh,) = io.outputs
    assert refresh.update and refresh.data[VIEW] == shown.data[VIEW] and calls_shown(refresh.data["text/plain"]) == 2


def test_panel_setting_keeps_load_ext_quiet(ip):
    run(ip, "%config TokMagic.panel = False")
    with capture_output() as io:
        run(ip, "%reload_ext tokmagic")
    assert io.outputs == [] and panel._current is None
    with capture_output() as io:
        run(ip, "%llm_panel")
    assert len(io.outputs) == 1 and panel._current is not None


def test_unload_stops_the_panel_and_llm_panel_needs_the_extension(ip, kernel_like):
    kernel_like(widgets=False)
    with capture_output():
        run(ip, "%llm_panel")
    live = panel._current
    thread = live.updates._thread
    with capture_output() as io:
        run(ip, "%unload_ext tokmagic")
    assert panel._current is None and not thread.is_alive()
    # its last redraw says it stopped, so a panel left on the page is not taken for live
    (last,) = io.outputs
    assert last.update and last.transient["display_id"] == live.display_id
    assert last.data["text/plain"].splitlines()[-1] == \
        "! stopped: tokmagic was unloaded, these are the totals as of then"
    assert live.post_run_cell not in ip.events.callbacks["post_run_cell"]
    assert live.updates.notify not in session._listeners
    result = ip.run_cell("%llm_panel", store_history=True)
    assert type(result.error_in_exec) is UsageError and "load_ext" in str(result.error_in_exec)
    run(ip, "%load_ext tokmagic")


# -- charts ----------------------------------------------------------------------------

def test_llm_chart_shows_and_keeps_the_figure(ip):
    from matplotlib.figure import Figure

    run(ip, BASIC_CALL)
    with capture_output() as io:
        run(ip, "%llm_chart --kind models -o fig")
    fig = ip.user_ns["fig"]
    assert isinstance(fig, Figure) and fig.get_suptitle() == "LLM cost and tokens by model"
    assert len(io.outputs) == 1 and "Figure" in io.outputs[0].data["text/plain"]


def test_llm_track_chart_draws_the_cells_calls_after_its_summary(ip, monkeypatch):
    charted = []
    draw = tokmagic.chart
    monkeypatch.setattr(tokmagic, "chart", lambda df, **kw: charted.append((df, kw)) or draw(df, **kw))
    run(ip, BASIC_CALL)  # not in the tracked cell: not in its chart
    with capture_output() as io:
        run(ip, f"%%llm_track exp --chart\n{BASIC_CALL}\nr = stream('openai-chat-stream-include-usage')")
    summary, chart = io.outputs
    assert summary.data["text/plain"].startswith("LLM usage [exp]")
    assert "Figure" in chart.data["text/plain"]
    ((df, kw),) = charted
    assert kw == {"kind": "tokens", "by": "call", "title": "LLM tokens per call [exp]"}
    assert df.tag.tolist() == ["exp", "exp"] and df.input_tokens.tolist() == [15, 53]


@pytest.mark.parametrize("line", ["%llm_chart --kind pie", "%llm_chart --kind cost --by tag",
                                  "%llm_chart --by nothing", "%llm_panel now"])
def test_bad_chart_and_panel_arguments_are_a_one_line_usage_error(ip, line):
    with capture_output() as io:
        result = ip.run_cell(line, store_history=True)
    assert type(result.error_in_exec) is UsageError
    assert [x for x in io.stderr.splitlines() if x] == [f"UsageError: {result.error_in_exec}"]


def test_new_magics_have_help_with_examples(ip):
    for name in ("llm_panel", "llm_chart"):
        doc = ip.find_magic(name, "line").__doc__
        assert "Examples" in doc and f"%{name}" in doc


def test_chart_defaults_to_the_session(ip):
    run(ip, BASIC_CALL)
    fig = tokmagic.chart(kind="tokens", by="tag")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["untagged"]


def test_reload_leaves_the_old_widget_marked_stopped_and_shows_a_live_one(ip, kernel_like):
    kernel_like(widgets=True)
    with capture_output():
        run(ip, "%llm_panel")
        run(ip, BASIC_CALL)
    old = panel._current
    with capture_output() as io:
        run(ip, "%reload_ext tokmagic")
    assert "stopped: tokmagic was unloaded" in old.widget.marks.value
    assert "<td class='tm-calls'>1</td>" in old.widget.totals.value
    new = panel._current
    assert new is not old and "stopped" not in new.widget.marks.value
    with capture_output():
        run(ip, BASIC_CALL)
    assert "<td class='tm-calls'>2</td>" in new.widget.totals.value
    assert "<td class='tm-calls'>1</td>" in old.widget.totals.value
