"""The panel and the charts in a real kernel, run headless by nbclient as nbconvert or
papermill would: every panel output carries the widget view and its text/plain and
text/html fallback, the saved outputs end with the session's final numbers, and charts
are PNG images."""
from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from .conftest import replay_server

VIEW = "application/vnd.jupyter.widget-view+json"
STATE = "application/vnd.jupyter.widget-state+json"

SETUP = """\
from openai import OpenAI
client = OpenAI(base_url={base!r} + "/v1", api_key="test", max_retries=0)

def chat(case, **kw):
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=[{{"role": "user", "content": "hi"}}],
        extra_headers={{"X-Replay-Case": case}}, **kw)

r = chat("openai-chat-basic")
r = list(chat("openai-chat-stream-include-usage", stream=True, stream_options={{"include_usage": True}}))
"""


@pytest.fixture(scope="module")
def base():
    server, _, url = replay_server.start_in_thread()
    yield url
    server.shutdown()
    server.server_close()


def execute(cells: list[str], tmp_path) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells for o in cell.outputs]
    assert not [o for o in outputs if o["output_type"] == "error" or o.get("name") == "stderr"]
    return nb


def displays(cell) -> list[dict]:
    return [o["data"] for o in cell.outputs if o["output_type"] == "display_data"]


def calls_shown(text: str) -> int:
    row = next(line for line in text.splitlines() if line.startswith("session"))
    return int(row.split()[1])


def test_panel_and_charts_in_a_kernel(base, tmp_path):
    nb = execute(["%load_ext tokmagic", SETUP.format(base=base), "%llm_panel", "%llm_chart",
                  "%llm_chart --kind cost", "%%llm_track exp --chart\nr = chat('openai-chat-basic')"], tmp_path)
    load, _, again, tokens, cost, track = nb.cells

    (panel,) = displays(load)
    assert set(panel) == {VIEW, "text/plain", "text/html"}
    # The load cell's output was refreshed at the end of each cell: a saved notebook,
    # or a frontend without widgets, shows the final numbers, not the zeros of the start.
    assert calls_shown(panel["text/plain"]) == 3
    assert "<td class='tm-calls'>3</td>" in panel["text/html"]
    (shown_again,) = displays(again)
    assert shown_again[VIEW]["model_id"] == panel[VIEW]["model_id"] and "text/html" in shown_again

    for chart in (tokens, cost):
        (image,) = displays(chart)
        assert set(image) == {"image/png", "text/plain"}
    summary, chart = displays(track)
    assert summary["text/plain"].startswith("LLM usage [exp]") and "image/png" in chart

    # The widget's own saved state holds the same final numbers.
    html = [m["state"]["value"] for m in nb.metadata["widgets"][STATE]["state"].values()
            if m["model_name"] == "HTMLModel"]
    assert any("<tr class='tm-session'><th>session</th><td class='tm-calls'>3</td>" in v for v in html)
    assert any("cell [6] · exp" in v for v in html)


def test_without_ipywidgets_the_kernel_gets_a_redrawn_text_and_html_display(base, tmp_path):
    nb = execute(["import sys\nsys.modules['ipywidgets'] = None  # not installed\n%load_ext tokmagic",
                  SETUP.format(base=base), "%llm_panel"], tmp_path)
    (panel,) = displays(nb.cells[0])
    assert set(panel) == {"text/plain", "text/html"} and calls_shown(panel["text/plain"]) == 2
    (again,) = displays(nb.cells[2])
    assert set(again) == {"text/plain", "text/html"} and calls_shown(again["text/plain"]) == 2
    assert "widgets" not in nb.metadata
