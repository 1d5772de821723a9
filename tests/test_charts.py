"""The charts, drawn from usage DataFrames: what each kind plots, that a filtered or
reloaded frame works as well as tokmagic.usage(), and the readable defaults (titles,
units, thousands separators, dollars)."""
from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.figure import Figure

import tokmagic
from tokmagic.ipython import charts
from tokmagic.monitor import session
from tokmagic.records import CallRecord, Usage

CALLS = [  # cell, tag, model, input, cached, output, reasoning, latency
    (1, None, "gpt-4o-mini", 1200, 1000, 300, 0, 0.8),
    (1, None, "gpt-4o", 100, 0, 50, 20, 1.2),
    (2, "exp", "gpt-4o-mini", 400, 0, 80, 0, 0.5),
    (None, "exp", "no-such-model", 10, 0, 5, 0, 0.3),
]


@pytest.fixture
def df() -> pd.DataFrame:
    for i, (cell, tag, model, inp, cached, out, reasoning, latency) in enumerate(CALLS):
        session.add(CallRecord(time=1.7e9 + 60 * i, provider="openai", api="chat", model=model, stream=False,
                               status="ok", http_status=200, cell=cell, tag=tag, latency_s=latency,
                               usage=Usage(input_tokens=inp, cached_input_tokens=cached, output_tokens=out,
                                           reasoning_tokens=reasoning)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no price for no-such-model, as intended
        return tokmagic.usage()


def stacks(ax) -> list[list[float]]:
    """Bar heights per stacked part (PARTS order), one list per part."""
    return [[bar.get_height() for bar in container] for container in ax.containers]


def test_tokens_per_cell_stack_input_cached_output_reasoning(df):
    fig = tokmagic.chart(df, kind="tokens", by="cell")
    assert isinstance(fig, Figure) and fig.get_suptitle() == "LLM tokens per cell"
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["[1]", "[2]", "no cell"]
    # cell 1: input 1300 of which 1000 cached; output 350 of which 20 reasoning.
    assert stacks(ax) == [[300, 400, 10], [1000, 0, 0], [330, 80, 5], [20, 0, 0]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [name for name, _ in charts.PARTS]
    assert ax.get_ylabel() == "tokens" and ax.yaxis.get_major_formatter()(12345, 0) == "12,345"
    assert [t.get_text() for t in ax.texts] == ["1,650", "480", "15"]  # totals over the bars


@pytest.mark.parametrize("by, labels", [("tag", ["exp", "untagged"]),
                                        ("model", ["gpt-4o", "gpt-4o-mini", "no-such-model"]),
                                        ("call", ["#1", "#2", "#3", "#4"])])
def test_tokens_by_tag_model_or_call(df, by, labels):
    (ax,) = tokmagic.chart(df, kind="tokens", by=by).axes
    assert [t.get_text() for t in ax.get_xticklabels()] == labels
    assert sum(map(sum, stacks(ax))) == df.total_tokens.sum()


def test_cumulative_cost_leaves_out_and_names_unpriced_calls(df):
    fig = tokmagic.chart(df, kind="cost")
    (ax,) = fig.axes
    (line,) = ax.get_lines()
    priced = df.cost_usd.fillna(0).cumsum().tolist()
    assert line.get_ydata().tolist() == pytest.approx(priced)
    assert ax.get_title() == "1 unpriced call not included"
    assert ax.get_ylabel() == "cost (USD)" and ax.get_xlabel() == "time (UTC)"
    assert fig.get_suptitle() == "Cumulative LLM cost"


def test_models_chart_shows_cost_and_tokens_per_model(df):
    fig = tokmagic.chart(df, kind="models")
    cost_ax, tokens_ax = fig.axes
    widths = [bar.get_width() for bar in cost_ax.containers[0]]
    by_model = df.groupby("model").cost_usd.sum(min_count=1)
    assert widths == pytest.approx(by_model.fillna(0).tolist())
    assert cost_ax.texts[-1].get_text() == "unpriced"
    assert sum(bar.get_width() for c in tokens_ax.containers for bar in c) == df.total_tokens.sum()


def test_latency_chart_has_both_distributions(df):
    left, right = tokmagic.chart(df, kind="latency").axes
    assert left.get_xlabel() == "latency (s)" and right.get_xlabel() == "output speed (tokens/s)"
    assert sum(p.get_height() for p in left.patches) == len(df)
    assert [t.get_text() for t in left.texts] == ["median 0.65 s"]
    # output tokens over latency: 16.7, 41.7, 160 and 437.5 tokens/s
    assert [t.get_text() for t in right.texts] == ["median 100.83 tokens/s"]


def test_a_filtered_or_reloaded_frame_charts_the_same(df, tmp_path):
    only_exp = tokmagic.chart(df[df.tag == "exp"], kind="tokens", by="model")
    assert [t.get_text() for t in only_exp.axes[0].get_xticklabels()] == ["gpt-4o-mini", "no-such-model"]
    df.to_csv(tmp_path / "usage.csv", index=False)
    reloaded = pd.read_csv(tmp_path / "usage.csv")
    for kind in charts.KINDS:
        tokmagic.chart(reloaded, kind=kind).savefig(tmp_path / f"{kind}.png")
    assert stacks(tokmagic.chart(reloaded).axes[0]) == stacks(tokmagic.chart(df).axes[0])


def test_an_empty_frame_says_so():
    fig = tokmagic.chart(kind="latency")
    assert fig.texts[-1].get_text() == "No LLM calls recorded yet."


def test_charts_stay_out_of_pyplots_open_figures(df):
    before = plt.get_fignums()
    tokmagic.chart(df)
    assert plt.get_fignums() == before


def test_dollar_ticks_share_their_decimals():
    fmt = charts._dollars()
    assert fmt.format_ticks([0, 0.0001, 0.0002]) == ["$0", "$0.000100", "$0.000200"]
    assert fmt.format_ticks([0, 0.5, 1.5, 1234]) == ["$0", "$0.50", "$1.50", "$1,234.00"]


@pytest.mark.parametrize("call, message", [
    (dict(kind="pie"), "unknown chart kind 'pie'; use one of: tokens, cost, models, latency"),
    (dict(by="day"), "cannot chart tokens by 'day'; use one of: cell, tag, model, call"),
    (dict(kind="cost", by="tag"), "by= applies to kind='tokens' only; leave it out for kind='cost'"),
])
def test_bad_kind_or_grouping_is_one_sentence(df, call, message):
    with pytest.raises(ValueError) as err:
        tokmagic.chart(df, **call)
    assert str(err.value) == message


def test_a_frame_without_usage_columns_is_refused():
    with pytest.raises(ValueError) as err:
        tokmagic.chart(pd.DataFrame({"time": []}), kind="cost")
    assert str(err.value) == "the frame has no 'cost_usd' column; chart a frame from tokmagic.usage()."
