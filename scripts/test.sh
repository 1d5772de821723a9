#!/usr/bin/env bash
# Installs tokmagic with its test dependencies into .venv (made if missing) and runs the
# whole test suite. Extra arguments go to pytest, e.g. `scripts/test.sh -k corpus`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The browser test drives Debian's chromium: playwright's own browser download cannot
# work offline. Installed when missing and we may (root, as in CI); otherwise it skips.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
# LlamaIndex's OpenAI adapter still declares openai<3 but runs on it: installed apart, so
# pip does not downgrade the SDK the other tests need.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llama-index-llms-openai
# No internet here: tiktoken reads its encodings from the shared cache when one is beside us.
if [ -z "${TIKTOKEN_CACHE_DIR:-}" ] && [ -d ../shared/tiktoken_cache ]; then
  export TIKTOKEN_CACHE_DIR="$(cd ../shared/tiktoken_cache && pwd)"
fi
exec .venv/bin/python -m pytest "$@"
