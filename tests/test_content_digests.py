"""What the analysis trusts is content, not a file's presence or its stamps: a figure emptied or a report edited
is drawn or written again by the next call (it does not say "nothing new"), and a metrics cell edited after it
was measured (its modification time restored) is named on stderr, left out of the table and measured again.

One tiny run is trained and analysed once per session (conftest's one_run_measured); each CLI test works on its
own copy of it, the commands run by their main() in this process. The store's
own cases fabricate cells as benchmarks/store.py does (no training)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as parquet
import pytest

from benchmarks.store import RECIPES, cell_table, fabricate_run
from conf import Settings
from folders import ExperimentFolder
from measuring import store
from measuring.layout import StoreLayout
from tests.conftest import REPOSITORY, SMALL_QUICK, copied

QUICK = SMALL_QUICK  # the options one_run_measured was measured under: probe_dimensions=32, one thread


@pytest.fixture
def out_dir(one_run_measured, tmp_path):
    """This test's own copy of the measured out_dir (one run of SMALL_RUN, 5 checkpoints: 0 1 2 4 8; every
    checkpoint measured, figures, report and phases drawn; stamps kept, as the original's)."""
    return copied(one_run_measured, tmp_path)


def experiment_of(out_dir: Path) -> ExperimentFolder:
    return ExperimentFolder.of(out_dir, "default")


def record_of(experiment: ExperimentFolder) -> dict:
    return json.loads(experiment.publication_path.read_text())


def figure_files(experiment: ExperimentFolder) -> dict[str, list[Path]]:
    """{figure: its files} as the last publication lists them."""
    return {name: [experiment.figures_path / file for file in entry["files"]]
            for name, entry in record_of(experiment)["figures"].items() if entry["files"]}


def modification_times(paths) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in paths}


def same_size_edit(path: Path, transform, *, keep_time: bool = True) -> None:
    """Replace the file's text by `transform(text)` (same length), its modification time restored."""
    stat = path.stat()
    text = path.read_text()
    edited = transform(text)
    assert edited != text and len(edited.encode()) == len(text.encode())
    path.write_text(edited)
    if keep_time:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def edit_one_value(path: Path) -> tuple[int, float, float]:
    """Rewrite the cell with one `value` changed (the schema, its metadata and the modification time kept, the
    size too when some edit keeps it); returns (the row, its measured value, the value written)."""
    stat, original = path.stat(), path.read_bytes()
    table = parquet.read_table(path)
    values = table.column("value").to_pylist()
    candidates = [row for row, value in enumerate(values) if value is not None and value == value]
    for row in candidates[:40]:
        edited = list(values)
        edited[row] = values[row] + 0.125
        changed = table.set_column(table.schema.get_field_index("value"), table.schema.field("value"),
                                   pa.array(edited, type=table.schema.field("value").type))
        parquet.write_table(changed, path)
        if path.stat().st_size == len(original):  # the size kept: only the content tells
            break
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.read_bytes() != original
    return row, values[row], edited[row]


# -- figures, phases.csv and the report ---------------------------------------------------------------------


def test_an_emptied_figure_is_drawn_again(out_dir, in_process):
    """A PNG truncated to 0 bytes is not "up to date": its figure alone is drawn again."""
    experiment = experiment_of(out_dir)
    files = figure_files(experiment)
    name = next(iter(files))
    victim = next(path for path in files[name] if path.suffix == ".png")
    others = [path for figure, paths in files.items() if figure != name for path in paths]
    before = modification_times(others)
    victim.write_bytes(b"")
    result = in_process("analysis.py", ["figures", f"out_dir={out_dir}", *QUICK])
    assert result.returncode == 0, result.stderr
    assert "nothing new" not in result.stdout
    assert victim.stat().st_size > 0 and victim.read_bytes().startswith(b"\x89PNG")
    assert f"1 redrawn ({name})" in result.stdout
    assert modification_times(others) == before  # the other figures are kept as drawn
    again = in_process("analysis.py", ["figures", f"out_dir={out_dir}", *QUICK])
    assert again.stdout.startswith("nothing new"), again.stdout


def test_an_edited_report_and_an_emptied_phases_table_are_written_again(out_dir, in_process):
    """report.html edited in place (same size, modification time restored) and phases.csv emptied: the next
    `analysis.py` writes both again, from the table, and draws no figure."""
    experiment = experiment_of(out_dir)
    phases = experiment.phases_path.read_bytes()
    figures = modification_times(path for paths in figure_files(experiment).values() for path in paths)
    same_size_edit(experiment.report_path, lambda text: text.replace("<h2>", "<H2>", 1))
    experiment.phases_path.write_bytes(b"")
    result = in_process("analysis.py", [f"out_dir={out_dir}", *QUICK])
    assert result.returncode == 0, result.stderr
    assert "nothing new" not in result.stdout
    assert "0 redrawn" in result.stdout and modification_times(figures) == figures
    assert "<H2>" not in experiment.report_path.read_text()
    assert experiment.phases_path.read_bytes() == phases
    again = in_process("analysis.py", ["figures", f"out_dir={out_dir}", *QUICK])
    assert again.stdout.startswith("nothing new"), again.stdout


def test_nothing_new_still_holds_when_nothing_was_touched(out_dir, in_process):
    """The content check costs no false alarm: an untouched folder is "nothing new", and nothing is written."""
    experiment = experiment_of(out_dir)
    watched = [experiment.report_path, experiment.phases_path,
               *(path for paths in figure_files(experiment).values() for path in paths)]
    before = modification_times(watched)
    result = in_process("analysis.py", ["figures", f"out_dir={out_dir}", *QUICK])
    assert result.returncode == 0 and result.stdout.startswith("nothing new"), result.stdout + result.stderr
    assert modification_times(watched) == before
    # and it stays cheap: no Parquet read, nothing drawn (importing figures/ loads matplotlib already: the
    # plug-ins import seaborn at module level, so that part of the promise is not checked here)
    script = ("import pandas, pyarrow.parquet, analysis, figures\n"
              "def refuse(*arguments, **options): raise AssertionError('read Parquet or drew')\n"
              "pandas.read_parquet = pyarrow.parquet.read_table = pyarrow.parquet.ParquetFile = refuse\n"
              "figures.draw_all = refuse\n"
              f"print(analysis.main(['figures', 'out_dir={out_dir}', *{QUICK!r}]))\n")
    checked = subprocess.run([sys.executable, "-c", script], cwd=REPOSITORY, capture_output=True, text=True,
                             timeout=300)
    assert checked.stdout.splitlines()[-1] == "0", checked.stdout + checked.stderr
    assert checked.stdout.startswith("nothing new"), checked.stdout


# -- metrics cells ----------------------------------------------------------------------------------------


def test_a_cell_edited_after_it_was_measured_is_named_and_measured_again(out_dir, in_process):
    """One value of a cell changed (its modification time restored): `analysis.py` names the cell on stderr,
    measures it again (exit 0: it was measured again in this call), and neither the cell nor the table holds
    the edited value."""
    experiment = experiment_of(out_dir)
    (run_id,) = StoreLayout(experiment).cell_run_ids()
    cell = StoreLayout(experiment).cell_path(run_id, 4)
    row, true_value, edited_value = edit_one_value(cell)
    key = pd.read_parquet(cell).iloc[row][store.KEY].to_dict()
    result = in_process("analysis.py", [f"out_dir={out_dir}", *QUICK])
    assert result.returncode == 0, result.stderr
    assert cell.name in result.stderr and "changed after it was measured" in result.stderr, result.stderr
    assert "1 checkpoint(s) measured" in result.stdout, result.stdout
    remeasured = pd.read_parquet(cell).set_index(store.KEY)
    assert remeasured.loc[tuple(key.values()), "value"] == pytest.approx(true_value)
    table = pd.read_parquet(experiment.table_path).set_index(store.KEY)
    assert table.loc[tuple(key.values()), "value"] != edited_value
    assert table.loc[tuple(key.values()), "value"] == pytest.approx(true_value)
    again = in_process("analysis.py", [f"out_dir={out_dir}", *QUICK])
    assert again.stdout.startswith("nothing new") and "changed after" not in again.stderr, again.stdout + again.stderr


SETTINGS = Settings(width=16)


@pytest.fixture
def digested(tmp_path) -> tuple[ExperimentFolder, Path]:
    """A fabricated run of three cells, each written as the analysis writes it (store.write_cell), merged."""
    experiment = ExperimentFolder(tmp_path / "experiment")
    fabricate_run(experiment, SETTINGS, [0, 1, 2])
    for iteration in (0, 1, 2):
        store.write_cell(StoreLayout(experiment).cell_path(SETTINGS.run_id, iteration),
                          cell_table(SETTINGS.run_id, iteration).to_pandas())
    store.merge(experiment, experiment.read_runs())
    return experiment, StoreLayout(experiment).cell_path(SETTINGS.run_id, 1)


def test_an_edited_cell_is_pending_and_left_out_of_a_rebuilt_part(digested, caplog):
    """The freshness check sees the edit (every metric pending); a part rebuilt for any reason leaves the edited
    cell's rows out, in one line naming it; the cell measured again is taken again."""
    experiment, cell = digested
    table = parquet.read_table(cell)
    metrics = sorted(set(table.column("metric").to_pylist()))
    sha = table.column("checkpoint_sha256")[0].as_py()
    assert store.pending(cell, sha, RECIPES, metrics) == []
    edit_one_value(cell)
    with caplog.at_level(logging.WARNING, logger="measuring.store"):
        assert store.pending(cell, sha, RECIPES, metrics) == metrics
        os.utime(cell)  # now its stamp changed too: the part is rebuilt, without it
        assert store.merge(experiment, experiment.read_runs()).written == [SETTINGS.run_id]
    named = [record.getMessage() for record in caplog.records if cell.name in record.getMessage()]
    assert named and all("changed after it was measured" in line for line in named)
    assert sorted(pd.read_parquet(experiment.table_path)["iteration"].unique()) == [0, 2]
    store.write_cell(cell, cell_table(SETTINGS.run_id, 1).to_pandas())  # measured again
    store.merge(experiment, experiment.read_runs())
    assert sorted(pd.read_parquet(experiment.table_path)["iteration"].unique()) == [0, 1, 2]


def test_an_edited_cell_is_not_kept_by_combine_or_note(digested):
    """Measuring some metrics again does not carry an edited cell's other rows over, and a note does not
    rewrite (and so bless) an edited cell."""
    experiment, cell = digested
    edit_one_value(cell)
    table = parquet.read_table(cell).to_pandas()
    sha = table["checkpoint_sha256"].iloc[0]
    one_metric = table[table["metric"] == table["metric"].iloc[0]]
    assert len(store.combine(cell, one_metric, sha)) == len(one_metric)
    before = cell.read_bytes()
    assert store.note(cell, "transfer_task", "none here", {name: "" for name in RECIPES}) is False
    assert cell.read_bytes() == before


def test_a_cell_without_its_digest_is_measured_again(digested):
    """A cell the analysis did not write (its digest file gone, or another tool's file) is not taken as measured."""
    experiment, cell = digested
    table = parquet.read_table(cell)
    metrics = sorted(set(table.column("metric").to_pylist()))
    sha = table.column("checkpoint_sha256")[0].as_py()
    StoreLayout.cell_digest_path(cell).unlink()
    assert store.pending(cell, sha, RECIPES, metrics) == metrics
    assert store.read_cell(cell) is None
