#!/usr/bin/env bash
# The README's first command: installs tokmagic with the notebook extras into .venv (made
# if missing) and runs notebooks/quickstart.ipynb headless. Without OPENAI_API_KEY or
# ANTHROPIC_API_KEY the notebook uses tokmagic's local demo endpoint, so it works offline;
# TOKMAGIC_DEMO=1 makes it use the demo endpoint even when keys are set (the kernel
# inherits this environment).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[notebook]'
# tiktoken cannot download its encodings offline: use the shared cache when one is beside us.
if [ -z "${TIKTOKEN_CACHE_DIR:-}" ] && [ -d ../shared/tiktoken_cache ]; then
  export TIKTOKEN_CACHE_DIR="$(cd ../shared/tiktoken_cache && pwd)"
fi
exec .venv/bin/python scripts/run_notebook.py notebooks/quickstart.ipynb notebooks/quickstart.executed.ipynb
