"""The panel benchmark runs and prints every row. No timing is asserted (wall times on a
shared machine say little); the comm message rate is, since the throttle bounds it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "panel.py"
ROWS = ("the panel listener alone", "pricing one record via genai-prices", "session.add, no panel",
        "session.add + panel listener only", "session.add + live widget panel",
        "openai chat captured, no panel", "openai chat captured + live widget panel")


def test_panel_benchmark_runs_quick_and_the_message_rate_is_bounded():
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    for label in ROWS:
        assert any(line.startswith(label) for line in lines), f"no row for {label!r}:\n{out.stdout}"
    floods = [line for line in lines if line.startswith(("2,000 calls/s", "flat out"))]
    assert len(floods) == 2 and all(line.endswith("PASS") for line in floods), out.stdout
