"""The memory benchmark runs and prints every row; it asserts no figures (see
benchmarks/README.md), only that each case was measured."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_memory_benchmark_prints_every_case():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory.py"), "--calls", "20", "--quick"],
                         capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line.split("  ")[0].strip(): line.split() for line in out.stdout.splitlines() if line.strip()}
    for case in ("openai chat", "openai chat stream", "openai stream, no usage",
                 "anthropic messages", "anthropic messages stream"):
        assert case in rows, out.stdout
        assert all(cell.lstrip("-").isdigit() for cell in rows[case][-4:]), rows[case]
    assert sum(line.split()[0] in ("300", "3000") for line in out.stdout.splitlines()
               if line.strip()) == 2, out.stdout
