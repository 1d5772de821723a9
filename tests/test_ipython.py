"""The IPython layer in a real InteractiveShell: %load_ext, the cell hooks, the magics,
%reload_ext / %unload_ext, driven by the real openai SDK against the replay server."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import warnings

import httpx2
import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

import tokmagic
from tokmagic import warn
from tokmagic.ipython import extension
from tokmagic.monitor import Summary, session
from tokmagic.records import Scope

# Corpus truths (each case's "expected"): input / output tokens.
BASIC = ("openai-chat-basic", 15, 19)
STREAM = ("openai-chat-stream-include-usage", 53, 15)
STREAM2 = ("openai-chat-stream-include-usage-2", 78, 9)

def run(ip, code: str, **kw):
    """Run a cell as a notebook does, failing the test with the cell's own error."""
    result = ip.run_cell(code, store_history=True, **kw)
    result.raise_error()
    return result


def our_hooks(ip, event: str) -> list:
    return [f for f in ip.events.callbacks[event] if isinstance(getattr(f, "__self__", None), extension.CellHooks)]


def shown(io) -> list[dict]:
    """The rich outputs a cell displayed (display() calls), as mimetype dicts."""
    return [o.data for o in io.outputs]


# -- %load_ext and the cell hooks ------------------------------------------------------

def test_load_ext_records_a_call_with_its_cell(ip):
    first = run(ip, "r = chat('openai-chat-basic')", cell_id="cell-a")
    second = run(ip, "r = chat('openai-chat-basic')")

    df = tokmagic.usage()
    assert len(df) == 2
    row = df.iloc[0]
    assert (row.input_tokens, row.output_tokens) == BASIC[1:]
    assert row.model == "gpt-3.5-turbo-0125" and row.provider == "openai" and row.status == "ok"
    # The In [n] number the user sees, not IPython's already-advanced counter.
    assert first.execution_count == 2 and row.cell == first.execution_count and row.cell_id == "cell-a"
    assert df.iloc[1].cell == second.execution_count == 3
    assert pd.isna(row.tag)
    assert session.scope == Scope()  # idle again between cells


def test_cell_kept_out_of_history_has_no_cell_number(ip):
    result = ip.run_cell("r = chat('openai-chat-basic')", store_history=False)
    assert result.success
    assert session.records()[0].cell is None


def test_empty_cell_inside_a_cell_keeps_the_outer_scope(ip):
    # IPython fires post_run_cell but not pre_run_cell for an empty cell.
    result = run(ip, "get_ipython().run_cell('')\nr = chat('openai-chat-basic')")
    assert session.records()[0].cell == result.execution_count


def test_a_failing_hook_warns_once_and_calls_are_still_recorded(ip, monkeypatch):
    monkeypatch.setattr(warn, "_seen", set())

    def broken(self, info):
        raise RuntimeError("no count")

    monkeypatch.setattr(extension.CellHooks, "_count", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(ip, "r = chat('openai-chat-basic')")
        run(ip, "r = chat('openai-chat-basic')")
    messages = [str(w.message) for w in caught if issubclass(w.category, warn.TokmagicWarning)]
    assert len(messages) == 1 and "no count" in messages[0]
    assert len(session.records()) == 2


# -- %%llm_track -----------------------------------------------------------------------

def test_llm_track_tags_and_summarises_only_its_cell(ip):
    run(ip, "r = chat('openai-chat-basic')")                       # untagged, before
    run(ip, "%%llm_track exp -q\nr = chat('openai-chat-basic')")   # same tag, earlier cell
    with capture_output() as io:
        cell = run(ip, "%%llm_track exp -o s\nr = chat('openai-chat-basic')\nr = stream('openai-chat-stream-include-usage')")
    after = run(ip, "r = chat('openai-chat-basic')")

    s = ip.user_ns["s"]
    assert isinstance(s, Summary) and s.tag == "exp"
    assert s.calls == 2
    assert s.usage.input_tokens == BASIC[1] + STREAM[1] == 68
    assert s.usage.output_tokens == BASIC[2] + STREAM[2] == 34
    records = session.records()
    assert s.cost_usd == pytest.approx(records[2].cost_usd + records[3].cost_usd)
    # Both representations are displayed, and they describe this cell only.
    (data,) = shown(io)
    assert data["text/plain"] == str(s)
    assert "LLM usage [exp]" in data["text/plain"] and "input tokens   68" in data["text/plain"]
    assert "output tokens  34" in data["text/plain"] and "calls          2" in data["text/plain"]
    assert "tokmagic-summary" in data["text/html"] and "68" in data["text/html"]
    # The nested run_cell did not clobber the outer cell's number; the next cell is untagged.
    assert [(r.tag, r.cell) for r in records] == [
        (None, 2), ("exp", 3), ("exp", cell.execution_count), ("exp", cell.execution_count),
        (None, after.execution_count)]
    assert records[3].stream is True


def test_llm_track_streaming_call(ip):
    with capture_output() as io:
        run(ip, "%%llm_track streams -o s\nchunks = stream('openai-chat-stream-include-usage-2')")
    (record,) = session.records()
    assert record.stream and record.tag == "streams" and record.status == "ok"
    assert (record.usage.input_tokens, record.usage.output_tokens) == STREAM2[1:]
    s = ip.user_ns["s"]
    assert (s.calls, s.usage.input_tokens, s.usage.output_tokens) == (1, 78, 9)
    assert "input tokens   78" in shown(io)[0]["text/plain"]


def test_llm_track_without_tag_prints_to_stdout(ip, capsys):
    run(ip, "%%llm_track\nr = chat('openai-chat-basic')")
    out = capsys.readouterr().out
    assert "LLM usage\n" in out and "input tokens   15" in out and "output tokens  19" in out
    assert session.records()[0].tag is None


def test_llm_track_body_error_fails_the_cell_and_still_counts(ip):
    with capture_output() as io:
        result = ip.run_cell("%%llm_track boom -o s\nr = chat('openai-chat-basic')\n1/0\nchat('openai-chat-basic')",
                             store_history=True)
    assert type(result.error_in_exec) is ZeroDivisionError and not result.success
    assert io.stdout.count("Traceback (most recent call last)") == 1  # shown once, as in a normal cell
    s = ip.user_ns["s"]
    assert (s.calls, s.usage.input_tokens, s.usage.output_tokens) == (1, 15, 19)
    assert "input tokens   15" in shown(io)[0]["text/plain"]
    # The next cell is attributed normally.
    nxt = run(ip, "r = chat('openai-chat-basic')")
    assert [(r.tag, r.cell) for r in session.records()] == [("boom", result.execution_count),
                                                              (None, nxt.execution_count)]


def test_llm_track_body_syntax_error_fails_the_cell(ip):
    with capture_output() as io:
        result = ip.run_cell("%%llm_track bad -o s\n1 +", store_history=True)
    assert type(result.error_in_exec) is SyntaxError
    assert ip.user_ns["s"].calls == 0 and "calls          0" in shown(io)[0]["text/plain"]


def test_llm_track_await_inside_a_running_loop_is_a_usage_error(ip):
    async def kernel_like():  # ipykernel runs sync cells from inside its event loop
        return ip.run_cell("%%llm_track a\nimport asyncio\nawait asyncio.sleep(0)\nran = True",
                           store_history=True)

    result = asyncio.run(kernel_like())
    assert type(result.error_in_exec) is UsageError and "tokmagic.track" in str(result.error_in_exec)
    assert "ran" not in ip.user_ns
    run(ip, "%%llm_track a -q\nimport asyncio\nawait asyncio.sleep(0)\nran = True")  # no loop: fine
    assert ip.user_ns["ran"] is True


def test_llm_track_value_of_last_expression_is_displayed(ip):
    with capture_output() as io:
        run(ip, "%%llm_track v -q\n6 * 7")
    assert "42" in io.stdout and shown(io) == []


def test_summary_setting_and_quiet_flag_silence_the_summary(ip):
    run(ip, "%config TokMagic.summary = False")
    with capture_output() as io:
        run(ip, "%%llm_track off -o s\nr = chat('openai-chat-basic')")
    assert shown(io) == [] and "LLM usage" not in io.stdout
    assert ip.user_ns["s"].calls == 1  # -o still keeps it

    run(ip, "%config TokMagic.summary = True")
    with capture_output() as io:
        run(ip, "%%llm_track on -q\nr = chat('openai-chat-basic')")
    assert shown(io) == []
    with capture_output() as io:
        run(ip, "%%llm_track on\nr = chat('openai-chat-basic')")
    assert len(shown(io)) == 1 and "calls          1" in shown(io)[0]["text/plain"]


def test_run_cell_magic_outside_a_cell_still_tags(ip):
    ip.run_cell_magic("llm_track", "direct -q -o s", "r = chat('openai-chat-basic')")
    (record,) = session.records()
    assert record.tag == "direct" and ip.user_ns["s"].calls == 1


# -- %llm_usage and %llm_reset ---------------------------------------------------------

@pytest.fixture
def three_calls(ip):
    cells = [run(ip, "%%llm_track a -q\nr = chat('openai-chat-basic')\nr = stream('openai-chat-stream-include-usage')"),
             run(ip, "%%llm_track b -q\nr = stream('openai-chat-stream-include-usage-2')")]
    return [c.execution_count for c in cells]


def test_llm_usage_returns_one_row_per_call(ip, three_calls):
    result = run(ip, "%llm_usage")
    df = result.result  # the last expression of the cell, as displayed
    assert isinstance(df, pd.DataFrame) and len(df) == 3
    assert df.input_tokens.tolist() == [15, 53, 78] and df.output_tokens.tolist() == [19, 15, 9]
    run(ip, "df = %llm_usage")
    assert len(ip.user_ns["df"]) == 3


@pytest.mark.parametrize("by", ["tag", "cell", "model"])
def test_llm_usage_by_gives_group_totals(ip, three_calls, by):
    run(ip, f"g = %llm_usage --by {by}")
    grouped, df = ip.user_ns["g"], tokmagic.usage()
    expected = df.groupby(by)[["input_tokens", "output_tokens"]].sum()
    assert grouped[["input_tokens", "output_tokens"]].equals(expected)
    assert grouped["calls"].tolist() == df.groupby(by).size().tolist()
    if by == "tag":
        assert grouped.loc["a", "input_tokens"] == 68 and grouped.loc["b", "output_tokens"] == 9
    if by == "cell":
        assert grouped.index.tolist() == three_calls and grouped["calls"].tolist() == [2, 1]
    if by == "model":
        assert grouped.loc["gpt-4o-mini-2024-07-18", "calls"] == 2


def test_llm_reset_forgets_every_call(ip, three_calls, capsys):
    run(ip, "%llm_reset")
    assert capsys.readouterr().out.strip().splitlines() == ["tokmagic: usage reset, no calls recorded."]
    assert len(run(ip, "%llm_usage").result) == 0


# -- bad input -------------------------------------------------------------------------

QUOTE, NAME = "close the quote", "pass a Python identifier, e.g. -o result"


@pytest.mark.parametrize("cell,says", [
    ("%%llm_track --bogus\nran = True", "--bogus"), ("%llm_usage --by nonsense", "nonsense"),
    ("%%llm_track a b\nran = True", "b"), ("%llm_reset now", "now"),
    # an unbalanced quote: shlex's ValueError, not argparse's error
    ("%%llm_track 'unbalanced\nran = True", QUOTE), ('%%llm_track "prompt v2\nran = True', QUOTE),
    ("%llm_usage --by 'tag", QUOTE), ("%llm_chart --kind 'cost", QUOTE), ("%llm_panel '", QUOTE),
    # -o VAR that is no variable name
    ("%%llm_track -o 1bad\nran = True", NAME), ("%%llm_track t -o s.attr\nran = True", NAME),
    ("%%llm_track -o class\nran = True", NAME), ("%%llm_track -o ''\nran = True", NAME),
    ("%llm_chart -o 1bad", NAME), ("%llm_chart -o fig.x", NAME),
])
def test_bad_arguments_are_a_one_line_usage_error(ip, cell, says):
    with capture_output() as io:
        result = ip.run_cell(cell, store_history=True)
    assert type(result.error_in_exec) is UsageError
    assert says in str(result.error_in_exec)
    assert "Traceback" not in io.stdout + io.stderr
    assert [line for line in io.stderr.splitlines() if line] == [f"UsageError: {result.error_in_exec}"]
    assert "ran" not in ip.user_ns


def test_output_variable_with_an_underscore_or_unicode_name_is_kept(ip):
    run(ip, "%%llm_track -q -o _s\nr = chat('openai-chat-basic')")
    run(ip, "%%llm_track -q -o résumé\nr = chat('openai-chat-basic')")
    assert ip.user_ns["_s"].calls == 1 and ip.user_ns["résumé"].calls == 1


def test_docstrings_are_help_with_examples(ip):
    for name, kind in (("llm_track", "cell"), ("llm_usage", "line"), ("llm_reset", "line")):
        doc = ip.find_magic(name, kind).__doc__
        assert "Examples" in doc and f"%{name}" in doc


# -- %reload_ext, %unload_ext ----------------------------------------------------------

def test_reload_ext_neither_double_counts_nor_double_registers(ip):
    run(ip, "%config TokMagic.summary = False")
    run(ip, "%reload_ext tokmagic")
    run(ip, "%load_ext tokmagic")
    tokmagic.load_ipython_extension(ip)
    assert len(our_hooks(ip, "pre_run_cell")) == 1 and len(our_hooks(ip, "post_run_cell")) == 1
    send = httpx2.Client.__dict__["send"]
    assert getattr(send.__tokmagic_original__, "__tokmagic_original__", None) is None  # wrapped once

    with capture_output() as io:
        result = run(ip, "%%llm_track once\nr = chat('openai-chat-basic')")
    (record,) = session.records()
    assert record.cell == result.execution_count and record.usage.input_tokens == 15
    assert shown(io) == []  # %config survived the reload
    assert sum(isinstance(c, type(ip.magics_manager.registry["TokMagic"])) for c in ip.configurables) == 1


def test_unload_ext_stops_capture_and_restores_send(ip):
    original = httpx2.Client.__dict__["send"].__tokmagic_original__
    run(ip, "%unload_ext tokmagic")
    assert httpx2.Client.__dict__["send"] is original
    assert our_hooks(ip, "pre_run_cell") == [] and our_hooks(ip, "post_run_cell") == []
    assert session.scope == Scope()

    run(ip, "r = chat('openai-chat-basic')")
    assert ip.user_ns["r"].usage.prompt_tokens == 15  # the call itself worked
    assert session.records() == []
    result = ip.run_cell("%%llm_track late\nr = chat('openai-chat-basic')", store_history=True)
    assert type(result.error_in_exec) is UsageError and "load_ext" in str(result.error_in_exec)

    run(ip, "%load_ext tokmagic")
    again = run(ip, "r = chat('openai-chat-basic')")
    assert [r.cell for r in session.records()] == [again.execution_count]


# -- load cost -------------------------------------------------------------------------

def test_load_ext_imports_no_display_libraries():
    code = ("import sys\nfrom IPython.core.interactiveshell import InteractiveShell\n"
            "InteractiveShell.instance().run_line_magic('load_ext', 'tokmagic')\n"
            "print(sorted(m for m in ('pandas', 'matplotlib', 'ipywidgets', 'tiktoken') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
