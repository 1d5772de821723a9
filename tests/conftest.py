"""Shared fixtures: the corpus replay server on 127.0.0.1, tiktoken's offline cache, a
clean, installed capture for every test, and an IPython shell with tokmagic loaded."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TOKMAGIC_SHARED", ROOT.parent / "shared"))
CORPUS = SHARED / "corpus"
CASES = CORPUS / "cases"
BUGS = CORPUS / "bugs"
#: tokmagic's own cases (written for its tests, not recordings), in the corpus's shape.
OWN_CASES = ROOT / "tests" / "cases"

if not os.environ.get("TIKTOKEN_CACHE_DIR") and (SHARED / "tiktoken_cache").is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(SHARED / "tiktoken_cache")

sys.path.insert(0, str(CORPUS))
import replay_server  # noqa: E402  (the corpus's own stdlib server)

import tokmagic  # noqa: E402
from tokmagic.monitor import session  # noqa: E402


def load_case(case_id: str) -> dict:
    return json.loads((CASES / f"{case_id}.json").read_text())


def all_cases() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(CASES.glob("*.json"))]


def load_own(case_id: str) -> dict:
    return json.loads((OWN_CASES / f"{case_id}.json").read_text())


def own_cases() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(OWN_CASES.glob("*.json"))]


def load_bug(bug_id: str) -> dict:
    return json.loads(next(BUGS.glob(f"{bug_id}*.json")).read_text())


@pytest.fixture(scope="session", params=["plain", "compressed-split"])
def replay(request):
    """The corpus served as recorded, and as real networks deliver it (gzip, streams cut
    at random byte boundaries)."""
    if request.param == "plain":
        server, corpus, base = replay_server.start_in_thread()
    else:
        server, corpus, base = replay_server.start_in_thread(compress=True, split_seed=11)
    yield base
    server.shutdown()
    server.server_close()


@pytest.fixture
def serve_cases(tmp_path):
    """Start a replay server over the given case dicts (e.g. a bug's exchanges); returns
    its base URL."""
    servers = []

    def start(cases: list[dict], **options) -> str:
        folder = tmp_path / f"cases{len(servers)}"
        folder.mkdir()
        for case in cases:
            (folder / f"{case['id']}.json").write_text(json.dumps(case))
        server, _, base = replay_server.start_in_thread(cases_dir=str(folder), **options)
        servers.append(server)
        return base

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def bug_cases(bug: dict) -> list[dict]:
    """A bug file's exchanges as replayable cases, served in order."""
    return [{"id": f"{bug['id']}-{i}", "provider": "", "api": "", "request": ex["request"],
             "response": {"stream_format": "sse" if ex["response"].get("sse") else None,
                          "body": None, "sse": None, **ex["response"]},
             "replay": {"sequence": i}}
            for i, ex in enumerate(bug["exchanges"])]


@pytest.fixture(autouse=True)
def captured():
    """Every test starts with capture installed and an empty session."""
    tokmagic.install()
    session.reset()
    yield session
    session.reset()


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Warnings given once per kind are given again in this test."""
    monkeypatch.setattr(tokmagic.warn, "_seen", set())


#: Run in the ``ip`` shell: an openai client on the replay server, and two helpers.
SHELL_SETUP = """\
from openai import OpenAI
client = OpenAI(base_url=BASE + "/v1", api_key="test", max_retries=0)

def chat(case, **kw):
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Replay-Case": case}, **kw)

def stream(case):
    return list(chat(case, stream=True, stream_options={"include_usage": True}))
"""


@pytest.fixture
def ip(replay):
    """A fresh shell, history off, tokmagic loaded, the SDK client defined."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    InteractiveShell.clear_instance()
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "tokmagic")
    shell.user_ns["BASE"] = replay
    shell.run_cell(SHELL_SETUP, store_history=True).raise_error()
    yield shell
    shell.run_line_magic("unload_ext", "tokmagic")
    InteractiveShell.clear_instance()
