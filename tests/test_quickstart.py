"""The quickstart notebook, run the way a newcomer without an API key runs it: in a real
kernel, in demo mode. Its totals must be exactly what the demo responses report, plus
the one call tokmagic had to estimate."""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
import tiktoken
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from . import demo_replies
from .demo_replies import USAGE_FIELDS

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
TAG = "summarise-v2"

#: The calls the notebook makes, in order: the kind of demo reply each gets, its api
#: column and its tag.
CALLS = [("openai_chat", "chat", None), ("openai_chat_stream", "chat", TAG),
         ("openai_chat", "chat", TAG), ("openai_chat_stream_no_usage", "chat", TAG),
         ("anthropic_messages", "messages", None), ("anthropic_messages_stream", "messages", None),
         ("openai_embeddings", "embeddings", None)]

#: Appended to the notebook for the test only: every recorded row, machine-readable.
PROBE = ('print(tokmagic.usage()[["api", "tag", "stream", "estimated", "estimate_method", '
         f'{", ".join(map(repr, USAGE_FIELDS))}]].to_json(orient="records"))')


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook with its outputs, plus the probe's rows. The kernel inherits this
    process's environment: no API keys (so demo mode) and TIKTOKEN_CACHE_DIR (set by
    conftest) for offline estimates."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(new_code_cell(PROBE))
    with pytest.MonkeyPatch.context() as mp:
        for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
            mp.delenv(key, raising=False)
        cwd = tmp_path_factory.mktemp("quickstart")
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(cwd)}}).execute()
    probe = nb.cells.pop()
    return nb, json.loads(probe.outputs[0]["text"])


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def text_of(cell) -> str:
    return "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def parse_summary(text: str) -> dict[str, int]:
    """The counts of a Summary's text form (``LLM usage [...]`` and its aligned rows)."""
    facts = dict(re.findall(r"^\s+(calls|input tokens|output tokens|note)\s+(.*)$", text, re.M))
    number = lambda s: int(s.replace(",", ""))  # noqa: E731
    inputs = re.match(r"([\d,]+)(?: \(([\d,]+) cached\))?", facts["input tokens"])
    estimated = re.search(r"(\d+) estimated", facts.get("note", ""))
    return {"calls": number(facts["calls"]), "input_tokens": number(inputs[1]),
            "cached_input_tokens": number(inputs[2] or "0"),
            "output_tokens": number(facts["output tokens"]),
            "estimated": int(estimated[1]) if estimated else 0}


def expected_rows(rows: list[dict]) -> list[dict]:
    """Each call's counts from responses.json; the estimated call's from the probe once its
    output count is checked against tiktoken and the streamed text."""
    data = demo_replies.load()
    turns = demo_replies.Turns(data)
    o200k = tiktoken.get_encoding("o200k_base")
    expected = []
    for (kind, _, tag), row in zip(CALLS, rows):
        reply = turns.next(kind)
        usage = demo_replies.reported(kind, reply)
        estimated = usage is None
        if estimated:
            assert row["estimate_method"] == "tiktoken:o200k_base"
            assert row["output_tokens"] == len(o200k.encode(demo_replies.text(kind, reply)))
            assert row["input_tokens"] > len(o200k.encode(data["article"]))
            usage = {name: row[name] for name in USAGE_FIELDS}
        expected.append({"tag": tag, "estimated": estimated, **usage})
    return expected


def totals(rows: list[dict]) -> dict[str, int]:
    return {"calls": len(rows), "input_tokens": sum(r["input_tokens"] for r in rows),
            "cached_input_tokens": sum(r["cached_input_tokens"] for r in rows),
            "output_tokens": sum(r["output_tokens"] for r in rows),
            "estimated": sum(bool(r["estimated"]) for r in rows)}


def test_runs_in_demo_mode_without_errors(executed):
    nb, _ = executed
    outputs = [o for cell in code_cells(nb) for o in cell.outputs]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert not [o["text"] for o in outputs if o.get("name") == "stderr"]
    setup = text_of(code_cells(nb)[1])
    assert "OpenAI DEMO MODE: replaying tokmagic's recorded demo responses" in setup
    assert "Anthropic DEMO MODE" in setup


def test_every_call_recorded_with_the_demo_usage(executed):
    _, rows = executed
    assert [(r["api"], r["tag"]) for r in rows] == [(api, tag) for _, api, tag in CALLS]
    for row, want in zip(rows, expected_rows(rows)):
        assert {name: row[name] for name in ("estimated", *USAGE_FIELDS)} == \
            {name: want[name] for name in ("estimated", *USAGE_FIELDS)}
    assert [r["estimated"] for r in rows] == [kind == "openai_chat_stream_no_usage" for kind, _, _ in CALLS]


def test_track_cell_shows_its_summary(executed):
    nb, rows = executed
    [cell] = [c for c in code_cells(nb) if c.source.startswith(f"%%llm_track {TAG}")]
    [shown] = [o for o in cell.outputs if o["output_type"] == "display_data"
               and "LLM usage" in o["data"].get("text/plain", "")]
    assert shown["data"]["text/plain"].startswith(f"LLM usage [{TAG}]")
    assert "tokmagic-summary" in shown["data"]["text/html"]
    assert f"LLM usage [{TAG}]" in shown["data"]["text/html"]
    tagged = [r for r in expected_rows(rows) if r["tag"] == TAG]
    assert parse_summary(shown["data"]["text/plain"]) == totals(tagged)


def test_final_summary_matches_the_demo_responses(executed):
    nb, rows = executed
    last = code_cells(nb)[-1]
    assert last.source.strip() == "tokmagic.summary()"
    summary = parse_summary(text_of(last))
    assert summary == totals(expected_rows(rows))
    assert summary["cached_input_tokens"] > 0 and summary["estimated"] == 1


def run_until(cell_id: str, env: dict[str, str]) -> list:
    """The notebook's code cells up to ``cell_id``, run in a kernel with ``env`` set."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells = nb.cells[:[c.get("id") for c in nb.cells].index(cell_id) + 1]
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    return code_cells(nb)


#: Keys that no API accepts: a call that reached a real API would fail.
FAKE_KEYS = {"OPENAI_API_KEY": "sk-not-a-key", "ANTHROPIC_API_KEY": "sk-ant-not-a-key"}


def test_tokmagic_demo_forces_the_demo_endpoint_when_keys_are_set():
    """With keys set but no network, TOKMAGIC_DEMO=1 still runs the notebook offline."""
    cells = run_until("quickstart-06", {**FAKE_KEYS, "TOKMAGIC_DEMO": "1"})
    setup, call = text_of(cells[1]), cells[2]
    assert "OpenAI DEMO MODE" in setup and "Anthropic DEMO MODE" in setup
    assert "TOKMAGIC_DEMO" in setup and "real API" not in setup
    assert not [o for o in call.outputs if o["output_type"] == "error"] and text_of(call).strip()


@pytest.mark.parametrize("value", ["", "0"])
def test_keys_are_used_unless_tokmagic_demo_says_otherwise(value):
    [_, setup] = run_until("quickstart-04", {**FAKE_KEYS, "TOKMAGIC_DEMO": value})
    assert text_of(setup).splitlines() == [
        "OpenAI: calling the real API; these calls are billed to your account.",
        "Anthropic: calling the real API; these calls are billed to your account."]
