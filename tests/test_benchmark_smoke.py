"""The overhead benchmark runs and prints every row. No timing is asserted here: wall
times on a shared machine say nothing; read the numbers with benchmarks/README.md."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "overhead.py"


def _expected_rows() -> list[str]:
    spec = importlib.util.spec_from_file_location("tokmagic_overhead_benchmark", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up there
    try:
        spec.loader.exec_module(bench)
    finally:
        del sys.modules[spec.name]
    rows = [case.label for case in bench.CASES if case.label]
    rows += [label for _, _, label, _ in bench.PER_CHUNK]
    return rows + ["%load_ext tokmagic, fresh IPython", "heavy modules imported by it"]


def test_overhead_benchmark_runs_quick_without_callgrind():
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--no-callgrind"],
                         capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    for label in _expected_rows():
        assert any(line.startswith(label) for line in lines), f"no row for {label!r}:\n{out.stdout}"
    assert "callgrind off (--no-callgrind)" in out.stdout
