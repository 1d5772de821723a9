"""Execute a notebook headless in a real kernel and save the executed copy, so the
quickstart runs from a shell (and from a fresh clone) without Jupyter's front ends.

Usage: python scripts/run_notebook.py NOTEBOOK OUT
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def last_text(nb: nbformat.NotebookNode) -> str:
    """The plain-text output of the last code cell that has one: the notebook's verdict."""
    for cell in reversed(nb.cells):
        for output in reversed(cell.get("outputs", [])):
            if output.get("output_type") == "stream":
                return output["text"].rstrip()
            text = output.get("data", {}).get("text/plain")
            if text:
                return text.rstrip()
    return ""


def run(source: Path, target: Path) -> nbformat.NotebookNode:
    """Execute ``source`` with the python3 kernel, in its own folder, and write ``target``
    (also when a cell fails, so the traceback can be read there)."""
    nb = nbformat.read(source, as_version=4)
    # The kernel logs a warning that its local TCP sockets are unencrypted: noise for a
    # headless run on 127.0.0.1. Its errors still show.
    client = NotebookClient(nb, timeout=120, kernel_name="python3", extra_arguments=["--log-level=ERROR"],
                            resources={"metadata": {"path": str(source.parent)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, target)
    return nb


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    source, target = Path(argv[0]), Path(argv[1])
    nb = run(source, target)
    print(f"Executed notebook written to {target}\n")
    print(last_text(nb))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
