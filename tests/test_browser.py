"""The live panel in a real browser: JupyterLab on 127.0.0.1 with a token, Debian's
chromium driven by playwright. A cell makes 20 streamed calls against the replay server,
50 ms between stream events; while it runs the panel's call count must rise in steps,
and it must end equal to %llm_usage's totals. Screenshots of the panel and of a chart
are saved to artifacts/, with the sampled values."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from . import jupyterlab
from .conftest import ROOT, replay_server


def _chromium() -> str | None:
    """Debian's chromium (never a browser downloaded by playwright)."""
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), "/usr/lib/chromium/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


CHROMIUM = _chromium()
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="playwright is not installed: pip install -e '.[dev]'"),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: apt-get install chromium"),
]

CALLS = 20
#: A recorded stream of 8 events reporting 53 input and 15 output tokens: about 0.4 s a
#: call at 50 ms between events, so the cell runs for about 8 s.
CASE = "openai-chat-stream-include-usage"
ARTIFACTS = ROOT / "artifacts"

CALLS_CELL = """\
from openai import OpenAI
client = OpenAI(base_url={base!r} + "/v1", api_key="test", max_retries=0)
for _ in range({calls}):
    for _chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=[{{"role": "user", "content": "hi"}}], stream=True,
            stream_options={{"include_usage": True}}, extra_headers={{"X-Replay-Case": "{case}"}}):
        pass
"""
USAGE_CELL = 'u = %llm_usage\nprint("usage", len(u), u.input_tokens.sum(), u.output_tokens.sum())'
CHART_CELL = "%llm_chart --kind tokens --by call"

CELL = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell"
PANEL_CALLS = ".tokmagic-panel .tm-session .tm-calls"
#: The kernel as the page sees it: the toolbar says "idle" for a moment before any
#: kernel is attached, so ask the session itself.
KERNEL_READY = """async () => {
  const panel = window.jupyterapp.shell.currentWidget;
  await panel.sessionContext.ready;
  const kernel = panel.sessionContext.session?.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""
#: Not awaited: the command's promise settles only when every cell has run.
RUN_ALL = "() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }"
READ = """() => {
  const cells = document.querySelectorAll('%s');
  const row = cells[0] && cells[0].querySelector('.tokmagic-panel .tm-session');
  const prompt = cells[1] && cells[1].querySelector('.jp-InputArea-prompt');
  const value = (name) => row ? row.querySelector('.tm-' + name).innerText.replace(/,/g, '') : null;
  return {busy: !!prompt && prompt.textContent.includes('*'),
          calls: value('calls'), input: value('input'), output: value('output')};
}""" % CELL


@pytest.fixture
def notebook(tmp_path):
    """A notebook in a fresh Lab root, calling a replay server that streams slowly."""
    server, _, base = replay_server.start_in_thread(event_delay_ms=50)
    root = tmp_path / "root"
    root.mkdir()
    nb = new_notebook(cells=[new_code_cell("%load_ext tokmagic"),
                             new_code_cell(CALLS_CELL.format(base=base, calls=CALLS, case=CASE)),
                             new_code_cell(USAGE_CELL), new_code_cell(CHART_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "live.ipynb")
    yield root
    server.shutdown()
    server.server_close()


def test_panel_counts_up_while_the_cell_runs(notebook, tmp_path):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with jupyterlab.running(tmp_path / "lab", notebook, env, ARTIFACTS / "browser-jupyterlab.log") as base, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(f"{base}/lab/tree/live.ipynb?token={jupyterlab.TOKEN}", wait_until="domcontentloaded")
            page.wait_for_function("() => !!window.jupyterapp", timeout=60_000)
            page.wait_for_selector(CELL, timeout=60_000)
            page.wait_for_function(KERNEL_READY, timeout=60_000, polling=200)

            page.evaluate(RUN_ALL)
            page.wait_for_selector(f"{CELL} >> nth=0 >> {PANEL_CALLS}", timeout=30_000)
            samples = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                samples.append(page.evaluate(READ))
                if not samples[-1]["busy"] and any(s["busy"] for s in samples):
                    break  # the calls cell has ended
                time.sleep(0.15)

            stdout = page.locator(CELL).nth(2).locator('[data-mime-type="application/vnd.jupyter.stdout"]')
            stdout.wait_for(timeout=30_000)
            usage = stdout.inner_text().split()
            page.wait_for_function(f"() => ({READ})().calls === '{CALLS}'", timeout=10_000)
            final = page.evaluate(READ)
            chart = page.locator(CELL).nth(3).locator(".jp-OutputArea-output img")
            chart.wait_for(timeout=30_000)

            page.locator(CELL).nth(0).locator(".tokmagic-panel").first.screenshot(path=ARTIFACTS / "panel.png")
            chart.screenshot(path=ARTIFACTS / "chart.png")
        finally:
            browser.close()

    (ARTIFACTS / "browser-samples.json").write_text(json.dumps({"samples": samples, "final": final}, indent=1))
    running = [int(s["calls"]) for s in samples if s["busy"] and s["calls"]]
    assert running == sorted(running), f"the count went back: {running}"
    steps = sorted({n for n in running if 0 < n < CALLS})
    assert len(steps) >= 3, f"too few values seen while the cell ran: {samples}"
    assert usage[0] == "usage" and int(usage[1]) == CALLS
    assert (final["calls"], final["input"], final["output"]) == tuple(usage[1:4])
