"""The metrics table as per-run parts: rebuilt only where cells changed, read by pandas as one table
of every fresh cell with its run's settings; bad settings and stale cells left out; a file in the table
folder's place refused. Cells are fabricated as benchmarks/store.py makes them (no training)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from benchmarks.store import RECIPES, checkpoint_sha256, fabricate_run, write_cell
from conf import Settings
from conf.analysis import Analysis
from folders import ExperimentFolder
from measuring import store
from measuring.layout import StoreLayout
from metrics import registry
from tests.conftest import REPOSITORY

ITERATIONS = [0, 1, 2]
# the first run (by id) gives an int to a float setting: a reader takes the first part's types
RUNS = [Settings(width=16, lr=1), Settings(width=32, lr_milestones=(2, 4)), Settings(width=8, seed=1)]


@pytest.fixture
def experiment(tmp_path) -> ExperimentFolder:
    """Three runs of three fresh cells each, merged once."""
    experiment = ExperimentFolder(tmp_path / "experiment")
    for settings in RUNS:
        fabricate_run(experiment, settings, ITERATIONS)
    store.merge(experiment, experiment.read_runs())
    return experiment


def snapshot(experiment: ExperimentFolder) -> dict:
    """Every file of the table (parts and their indexes): bytes and modification time."""
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns)
            for path in experiment.table_path.iterdir() if not path.name.endswith(".lock")}


def expected_rows(experiment: ExperimentFolder, runs: list[Settings], left_out=()) -> pd.DataFrame:
    """What the old merge gave: every cell's rows with its run's settings (lists as JSON text)."""
    frames = []
    for settings in runs:
        for path in StoreLayout(experiment).run_cell_paths(settings.run_id):
            if path in left_out:
                continue
            frame = pd.read_parquet(path)
            for key, value in settings.to_record().items():  # a null number setting (a size vit alone takes): NaN
                frame[key] = json.dumps(value) if isinstance(value, list) else math.nan if value is None else value
            frames.append(frame)
    return sorted_rows(pd.concat(frames, ignore_index=True))


def sorted_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values(store.KEY).reset_index(drop=True)


def test_the_first_run_gives_an_int_to_a_float_setting():
    """The fixture's premise: the run whose part a reader looks at first has lr=1 as an int."""
    first = min(RUNS, key=lambda settings: settings.run_id)
    assert first.lr == 1 and isinstance(first.lr, int)


def test_pandas_reads_the_table_as_every_fresh_cell_with_its_settings(experiment):
    table = pd.read_parquet(experiment.table_path)
    assert sorted(path.name for path in experiment.table_path.glob("*.parquet")) == \
        sorted(f"{settings.run_id}.parquet" for settings in RUNS)  # one part per run, the hidden files aside
    expected = expected_rows(experiment, RUNS)
    assert set(table.columns) == set(expected.columns) and len(table) == len(RUNS) * len(ITERATIONS) * 70
    pd.testing.assert_frame_equal(sorted_rows(table)[list(expected.columns)], expected, check_dtype=False)
    assert table["lr"].dtype == "float64" and table["width"].dtype == "int64" and table["augment"].dtype == bool
    assert set(table["lr_milestones"]) == {"[]", "[2, 4]"}


def test_nothing_new_rewrites_no_part(experiment):
    before = snapshot(experiment)
    merged = store.merge(experiment, experiment.read_runs())
    assert merged.written == [] and merged.removed == [] and snapshot(experiment) == before
    assert merged.rows == len(RUNS) * len(ITERATIONS) * 70 and merged.parts == len(RUNS)


def test_a_part_deleted_by_hand_is_rebuilt(experiment):
    StoreLayout(experiment).part_path(RUNS[0].run_id).unlink()
    assert store.merge(experiment, experiment.read_runs()).written == [RUNS[0].run_id]
    assert pd.read_parquet(experiment.table_path)["run_id"].nunique() == len(RUNS)


def test_one_run_with_a_changed_cell_is_the_only_part_rewritten(experiment):
    changed = RUNS[1].run_id
    before = snapshot(experiment)
    write_cell(experiment, changed, 1, seed=7)  # measured again: other values
    merged = store.merge(experiment, experiment.read_runs())
    after = snapshot(experiment)
    assert merged.written == [changed]
    assert {name for name in before if before[name] != after[name]} == {f"{changed}.parquet", f".{changed}.json"}
    pd.testing.assert_frame_equal(sorted_rows(pd.read_parquet(experiment.table_path))[list(expected_rows(
        experiment, RUNS).columns)], expected_rows(experiment, RUNS), check_dtype=False)


def test_a_slurm_task_writes_only_its_own_runs_part(experiment):
    for settings in RUNS[:2]:
        write_cell(experiment, settings.run_id, 2, seed=9)
    before = snapshot(experiment)
    assert store.update_run(experiment, experiment.run(RUNS[0].run_id).read_record()) == "written"
    after = snapshot(experiment)
    assert {name for name in before if before[name] != after[name]} == {f"{RUNS[0].run_id}.parquet",
                                                                       f".{RUNS[0].run_id}.json"}


def test_a_run_whose_settings_are_bad_is_left_out(experiment):
    bad = RUNS[2]
    experiment.run(bad.run_id).settings_path.write_text("not json")
    merged = store.merge(experiment, experiment.read_runs())
    assert merged.removed == [bad.run_id] and not StoreLayout(experiment).part_path(bad.run_id).exists()
    table = pd.read_parquet(experiment.table_path)
    assert set(table["run_id"]) == {settings.run_id for settings in RUNS[:2]}
    assert store.merge(experiment, experiment.read_runs()).removed == []  # remembered: its cells are not read again


def test_stale_cells_are_left_out(experiment):
    """Rows computed under a recipe their metric no longer has for their options (another version of the lab), or
    from a checkpoint the manifest no longer lists, are not in the table."""
    run = RUNS[0].run_id
    other_recipe = write_cell(experiment, run, 1, recipe="another_one_")
    folder = experiment.run(run)
    manifest = json.loads(folder.manifest_path.read_text())
    manifest["files"][folder.checkpoint_path(2).name]["sha256"] = "0" * 64  # the checkpoint was made again
    folder.manifest_path.write_text(json.dumps(manifest))
    store.merge(experiment, experiment.read_runs())
    table = pd.read_parquet(experiment.table_path)
    assert sorted(table[table["run_id"] == run]["iteration"].unique()) == [0]
    assert set(table["recipe"]) == set(RECIPES.values())
    pd.testing.assert_frame_equal(sorted_rows(table)[list(expected_rows(experiment, RUNS).columns)], expected_rows(
        experiment, RUNS, left_out=[other_recipe, StoreLayout(experiment).cell_path(run, 2)]), check_dtype=False)


def test_a_file_where_the_table_folder_goes_is_refused_in_one_line_and_left_as_it_is(tmp_path):
    """A file standing where the table's folder goes is the environment's fault: the merge stops with an OSError
    naming it, which analysis.py prints as one line (exit 1), and leaves the file as it is; once it is moved away,
    the merge builds the table from the cells (they hold every value)."""
    from utils import describe_environment_error

    experiment = ExperimentFolder(tmp_path / "experiment")
    for settings in RUNS:
        fabricate_run(experiment, settings, ITERATIONS)
    store.write_frame(experiment.table_path, expected_rows(experiment, RUNS[:1]))
    before = experiment.table_path.read_bytes()
    with pytest.raises(FileExistsError) as refused:
        store.merge(experiment, experiment.read_runs())
    line = describe_environment_error(refused.value)
    assert str(experiment.table_path) in line and "a file of that name is in the way" in line and "\n" not in line
    assert experiment.table_path.read_bytes() == before
    experiment.table_path.unlink()
    assert store.merge(experiment, experiment.read_runs()).parts == len(RUNS)


CONCURRENT = """
import sys
from benchmarks.store import write_cell
from folders import ExperimentFolder
from measuring import store
from metrics import registry
experiment = ExperimentFolder(sys.argv[1])
for iteration in range(10, 16):
    write_cell(experiment, sys.argv[2], iteration, seed=int(sys.argv[3]))
    store.merge(experiment, experiment.read_runs())
"""


def test_two_processes_merging_at_once_end_with_a_complete_table(experiment):
    """Each writes cells of its own run and merges after each; the last merge sees every cell."""
    for settings in RUNS[:2]:
        folder = experiment.run(settings.run_id)
        manifest = json.loads(folder.manifest_path.read_text())
        manifest["files"].update({folder.checkpoint_path(iteration).name: {"iteration": iteration,
                                                                          "sha256": checkpoint_sha256(settings.run_id, iteration)}
                                  for iteration in range(10, 16)})
        folder.manifest_path.write_text(json.dumps(manifest))
    processes = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(experiment.path), settings.run_id, str(seed)],
                                  cwd=REPOSITORY) for seed, settings in enumerate(RUNS[:2])]
    assert [process.wait(timeout=120) for process in processes] == [0, 0]
    table = pd.read_parquet(experiment.table_path)
    for settings in RUNS[:2]:
        assert sorted(table[table["run_id"] == settings.run_id]["iteration"].unique()) == [*ITERATIONS, *range(10, 16)]
    assert not table.duplicated(store.KEY).any()


def test_a_part_rebuilt_by_another_process_while_this_one_waited_is_kept(experiment, monkeypatch):
    """Between this process's first look and its lock, another process adds a cell and rebuilds the
    part: this one finds it up to date under the lock (no work twice), and the table has the cell."""
    run, real_lock, interleaved = RUNS[0].run_id, store.exclusive_lock, []

    def lock_after_the_other_process(path, **options):
        if path == StoreLayout(experiment).part_lock_path(run) and not interleaved:
            interleaved.append(1)  # the other process: a new cell, then its own merge, all before our lock
            monkeypatch.setattr(store, "exclusive_lock", real_lock)
            write_cell(experiment, run, 2, seed=5)
            assert store.merge(experiment, experiment.read_runs()).written == [run]
        return real_lock(path, **options)

    write_cell(experiment, run, 1, seed=4)  # what this process came to merge
    monkeypatch.setattr(store, "exclusive_lock", lock_after_the_other_process)
    assert store.update_run(experiment, experiment.run(run).read_record()) == "kept" and interleaved
    pd.testing.assert_frame_equal(sorted_rows(pd.read_parquet(experiment.table_path))[list(expected_rows(
        experiment, RUNS).columns)], expected_rows(experiment, RUNS), check_dtype=False)


def test_rows_of_other_options_sit_beside_and_a_new_version_replaces_only_its_own(experiment):
    """A cell holds every call's rows: `pending` asks for a metric's rows under the call's recipe, `combine` adds
    another call's rows (other options) beside the others and replaces only those of the same metric and options;
    the merge keeps every current row and leaves out those of an older version of a metric until measured again."""
    run, cell_path = RUNS[0].run_id, StoreLayout(experiment).cell_path(RUNS[0].run_id, 1)
    cell = pd.read_parquet(cell_path)
    metrics, digest = sorted(cell["metric"].unique()), cell["checkpoint_sha256"].iloc[0]
    before = sorted_rows(pd.read_parquet(experiment.table_path))
    other = Analysis(layers="block00,block01", probe_dimensions=64)
    asked, words = registry.recipes(other), registry.options_texts(other)
    assert store.pending(cell_path, digest, RECIPES, metrics) == []
    assert store.pending(cell_path, digest, asked, metrics) == metrics  # another question: every metric
    assert store.pending(cell_path, "0" * 64, RECIPES, metrics) == metrics  # another checkpoint: everything

    beside = cell.assign(recipe=cell["metric"].map(asked), options=cell["metric"].map(words), value=-1.0)
    store.write_cell(cell_path, store.combine(cell_path, beside, digest))
    assert store.pending(cell_path, digest, asked, metrics) == [] and store.pending(cell_path, digest, RECIPES, metrics) == []
    store.merge(experiment, experiment.read_runs())
    table = sorted_rows(pd.read_parquet(experiment.table_path))
    pd.testing.assert_frame_equal(table[table["options"] == ""].reset_index(drop=True)[list(before.columns)], before)
    added = table[table["options"] != ""]
    assert len(added) == len(cell) and (added["value"] == -1.0).all()
    assert set(added["options"]) == {"layers=block00,block01 probe_dimensions=64", "layers=block00,block01"}

    older = cell[cell["metric"] == metrics[0]].assign(recipe="older_versn", value=-2.0)  # (metric, '') measured by older code
    store.write_cell(cell_path, store.combine(cell_path, older, digest))
    assert len(pd.read_parquet(cell_path)) == 2 * len(cell)  # it replaced the rows of its metric and options only
    assert store.pending(cell_path, digest, RECIPES, metrics) == [metrics[0]]
    store.merge(experiment, experiment.read_runs())
    table = pd.read_parquet(experiment.table_path)
    mine = table[(table["run_id"] == run) & (table["iteration"] == 1) & (table["options"] == "")]
    assert metrics[0] not in set(mine["metric"]) and set(mine["metric"]) == set(metrics[1:])
    remade = older.assign(recipe=RECIPES[metrics[0]], value=-3.0)  # the same question under today's code
    store.write_cell(cell_path, store.combine(cell_path, remade, digest))
    store.merge(experiment, experiment.read_runs())
    table = pd.read_parquet(experiment.table_path)
    rows = table[(table["run_id"] == run) & (table["metric"] == metrics[0]) & (table["value"] < 0)]
    assert set(rows["iteration"]) == {1} and set(rows["value"]) == {-3.0, -1.0} and len(rows) == 2 * len(older)
