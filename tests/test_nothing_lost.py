"""Nothing lost by asking another question: analysis calls with other `layers=`, `metrics=`, options and run filters
add their rows beside what earlier calls measured (their options in the rows' `options` column and recipe) and
never delete any (measuring/store.py). Checked with the tables before and after three differently-optioned calls."""

from __future__ import annotations

import pandas as pd
import pytest

import analysis
from conf import SettingsError
from tests.conftest import copied, trained_and_measured

pytestmark = pytest.mark.slow  # end to end: real runs trained and measured (make test-fast leaves them out)

RUN = ["image_size=8", "depth=1,2", "width=4", "epochs=2", "synthetic_train_size=128"]  # 2 runs, 5 checkpoints each
QUIET = ["log_level=WARNING", "threads=1", "figures=false"]
KEY = ["run_id", "iteration", "layer", "metric", "split", "options"]
# Three other questions: one run's other layers and one metric; another pooling for two metrics; the other run's
# transfer probe on another task (only transfer_accuracy's recipe reads it: the others are fresh and stay as they are).
CALLS = [["depth=1", "layers=blocks.0,head", "metrics=ncc_accuracy,cka_previous_layer"],
         ["metrics=probe_accuracy,cdnv", "probe_dimensions=8"],
         ["depth=2", "transfer_task=brightness"]]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """Two runs measured under the default options, every metric."""
    return trained_and_measured(tmp_path_factory.mktemp("nothing_lost"), RUN, QUIET)


def ordered(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values([column for column in KEY if column in table]).reset_index(drop=True)


def test_three_other_questions_add_rows_beside_the_first_and_take_none_away(measured, tmp_path):
    out_dir = copied(measured, tmp_path)
    experiment = out_dir / "default"
    table_before = ordered(analysis.read_table(experiment, options=None))
    similarity_before = ordered(analysis.read_similarity(experiment, options=None))
    assert set(table_before["options"]) == {""} and set(similarity_before["options"]) == {""}

    for words in CALLS:
        assert analysis.main([f"out_dir={out_dir}", *QUIET, *words]) == 0, words
    table, similarity = analysis.read_table(experiment, options=None), analysis.read_similarity(experiment, options=None)

    # every row measured before is there, with the same value, and the default question reads exactly them
    kept = table_before.merge(table, on=KEY, how="left", suffixes=("", "_after"), indicator=True)
    assert (kept["_merge"] == "both").all()
    pd.testing.assert_series_equal(kept["value_after"], kept["value"], check_names=False)
    pd.testing.assert_frame_equal(ordered(analysis.read_table(experiment))[list(table_before.columns)], table_before)
    pd.testing.assert_frame_equal(ordered(analysis.read_similarity(experiment))[list(similarity_before.columns)],
                                  similarity_before)

    # each call's rows beside them, under its own options
    depth_one, depth_two = (set(table_before[table_before["depth"] == depth]["run_id"]) for depth in (1, 2))
    first = table[table["options"] == "layers=blocks.0,head"]
    assert set(first["run_id"]) == depth_one and set(first["metric"]) == {"ncc_accuracy", "cka_previous_layer"}
    assert set(first["layer"]) == {"input", "blocks.0", "head", "logits"}  # input and logits always
    second = table[table["options"] == "probe_dimensions=8"]
    assert set(second["metric"]) == {"probe_accuracy"} and set(second["run_id"]) == depth_one | depth_two
    # cdnv reads no pooling: the second call found its rows fresh and measured none
    third = table[table["options"] == "transfer_task=brightness"]
    assert set(third["metric"]) == {"transfer_accuracy"} and set(third["run_id"]) == depth_two
    assert len(table) == len(table_before) + len(first) + len(second) + len(third)
    assert set(similarity["options"]) == {"", "layers=blocks.0,head"} and len(similarity) > len(similarity_before)
    assert set(similarity[similarity["options"] != ""]["run_id"]) == depth_one

    # a call's question reads back as typed, in any order; one never measured is refused in one line
    assert len(analysis.read_table(experiment, "layers=blocks.0,head")) == len(first)
    # the brightness question: every row of the default one but depth 1's transfer probe, which it never measured
    unasked = (table_before["metric"] == "transfer_accuracy") & table_before["run_id"].isin(depth_one)
    assert len(analysis.read_table(experiment, "transfer_task=brightness")) == len(table_before) - unasked.sum()
    with pytest.raises(SettingsError, match="no rows measured under options='layers=head'"):
        analysis.read_table(experiment, "layers=head")  # every metric's rows depend on the layers


def test_the_figures_read_the_question_asked_and_the_default_one_again_after(measured, tmp_path, capsys):
    """A call under other options draws its own rows (and says so); `figures` with the defaults draws the first
    question again from the rows kept beside them, measuring nothing."""
    out_dir = copied(measured, tmp_path)
    experiment = out_dir / "default"
    figures = experiment / "figures"
    assert analysis.main([f"out_dir={out_dir}", "log_level=WARNING", "threads=1", *CALLS[0]]) == 0
    assert "Figures and tables of the rows measured under layers=blocks.0,head" in capsys.readouterr().out
    assert "measured under layers=blocks.0,head" in (experiment / "report.html").read_text()
    assert (figures / "ncc_by_layer.png").exists() and not (figures / "learning_phases.png").exists()  # ncc only
    assert analysis.main(["figures", f"out_dir={out_dir}", "log_level=WARNING"]) == 0
    assert "measured under layers=" not in (experiment / "report.html").read_text()
    assert (figures / "learning_phases.png").exists()  # the default question's reconstruction rows, kept
