#!/usr/bin/env bash
# Installs tokmagic with its test dependencies into .venv (made if missing) and runs the
# whole test suite. Extra arguments go to pytest, e.g. `scripts/test.sh -k corpus`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
# No internet here: tiktoken reads its encodings from the shared cache when one is beside us.
if [ -z "${TIKTOKEN_CACHE_DIR:-}" ] && [ -d ../shared/tiktoken_cache ]; then
  export TIKTOKEN_CACHE_DIR="$(cd ../shared/tiktoken_cache && pwd)"
fi
exec .venv/bin/python -m pytest "$@"
