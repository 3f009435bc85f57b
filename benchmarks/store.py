"""python benchmarks/store.py [runs=1000] [checkpoints=12] [baseline_runs=100] — the metrics table's cost: per-run parts vs re-merging every cell.

Fabricates, in a temporary folder, an experiment of `runs` run folders (settings.json, a manifest
listing `checkpoints` checkpoints) and one cell per checkpoint as analysis.py writes them: 7 layers
× 5 metrics × 2 splits = 70 rows with the cell columns (run_id, iteration, epoch, stage,
parent_run_id, layer, metric, split, value, l2, dimensions, layer_index, recipe, options, depends_on,
checkpoint_sha256:
each metric's current recipe under the default options);
each run adds its ~40 settings as columns in the table. Then times, in one process:

    first merge     every run's part built once (what an experiment pays once, or after a metric's new version)
    (a)             a merge with nothing new: target <= 10 s
    (b)             a merge after one new run's cells were added: target <= 5 s
    (c)             one run's part alone, as a Slurm array task writes it (store.update_run)
    baseline        the old merge: read every cell, add each run's settings, rewrite one file; it ran
                    on every analysis call and in every array task, whatever was new

Prints one table: measurement, seconds, baseline, target, met. Exit 1 when a target is missed or a
table read back differs from the baseline's rows. About 2 minutes on 2 cores; most of it is the
fabrication and the baseline.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as parquet

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from conf import Settings  # noqa: E402
from conf.analysis import Analysis  # noqa: E402
from folders import ExperimentFolder  # noqa: E402
from measuring import store  # noqa: E402
from measuring.layout import StoreLayout  # noqa: E402
from metrics import registry

LAYERS = ("input", "block00", "block01", "block02", "block03", "pooled", "logits")
METRICS = ("ncc_accuracy", "cdnv", "probe_accuracy", "reconstruction_mse", "transfer_accuracy")
SPLITS = ("train", "test")
RECIPES = {metric: registry.recipes(Analysis())[metric] for metric in METRICS}  # as analysis.py writes them
DEPENDS_ON = {metric: " ".join(registry.option_names(registry.METRICS[metric])) for metric in METRICS}
TARGETS = {"nothing new": 10.0, "one new run": 5.0}


def grid(runs: int) -> list[Settings]:
    """`runs` distinct settings: seeds × widths × learning rates, everything else the defaults."""
    return [Settings(seed=index % 10, width=8 + (index // 10) % 100, lr=0.01 * (1 + index // 1000))
            for index in range(runs)]


def checkpoint_sha256(run_id: str, iteration: int) -> str:
    return hashlib.sha256(f"{run_id}/{iteration}".encode()).hexdigest()


def cell_table(run_id: str, iteration: int, recipe: str | None = None, seed: int = 0) -> pa.Table:
    """One checkpoint's 70 rows, with the columns and types measuring.cell_frame gives them, each metric's under its
    current recipe (`recipe`: that one for every row instead: a stale cell, of another version of the lab)."""
    rows = [(layer, metric, split) for layer in LAYERS for metric in METRICS for split in SPLITS]
    count = len(rows)
    values = [((seed * 7919 + iteration * 104729 + index) % 1000) / 1000 for index in range(count)]
    return pa.table({"run_id": [run_id] * count, "iteration": [iteration] * count, "epoch": [iteration / 10] * count,
                     "stage": [1] * count, "parent_run_id": [""] * count, "layer": [row[0] for row in rows],
                     "metric": [row[1] for row in rows], "split": [row[2] for row in rows], "value": values,
                     "l2": [1e-3 if row[1] != "cdnv" else None for row in rows],
                     "dimensions": [512.0 if row[1] != "cdnv" else None for row in rows],
                     "layer_index": [LAYERS.index(row[0]) for row in rows],
                     "recipe": [recipe or RECIPES[row[1]] for row in rows], "options": [""] * count,
                     "depends_on": [DEPENDS_ON[row[1]] for row in rows],
                     "checkpoint_sha256": [checkpoint_sha256(run_id, iteration)] * count})


def write_cell(experiment: ExperimentFolder, run_id: str, iteration: int, recipe: str | None = None, seed: int = 0) -> Path:
    buffer = io.BytesIO()
    parquet.write_table(cell_table(run_id, iteration, recipe, seed), buffer)
    path = StoreLayout(experiment).cell_path(run_id, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())  # not atomic_write_bytes: its fsync would make fabricating a grid take minutes
    StoreLayout.cell_digest_path(path).write_text(hashlib.sha256(buffer.getvalue()).hexdigest() + "\n")  # as write_cell
    return path


def fabricate_run(experiment: ExperimentFolder, settings: Settings, iterations: list[int], recipe: str | None = None) -> None:
    """A run folder (settings, a manifest listing the checkpoints) and one cell per checkpoint."""
    folder = experiment.run(settings.run_id)
    folder.prepare(settings)
    files = {folder.checkpoint_path(iteration).name: {"iteration": iteration, "epoch": iteration / 10, "stage": 1,
                                                      "sha256": checkpoint_sha256(settings.run_id, iteration)}
             for iteration in iterations}
    folder.manifest_path.write_text(json.dumps({"format_version": 2, "schedule": iterations, "files": files}))
    for iteration in iterations:
        write_cell(experiment, settings.run_id, iteration, recipe, settings.seed)


def schedule(checkpoints: int) -> list[int]:
    return [0] + [2 ** power for power in range(checkpoints - 1)]


def old_merge(experiment: ExperimentFolder, out: Path, run_ids: set[str]) -> pd.DataFrame:
    """The merge this store replaced, on the cells of `run_ids`: every cell read, each run's settings
    added, one file rewritten."""
    frames, layout = [], StoreLayout(experiment)
    for run_id in sorted(set(layout.cell_run_ids()) & run_ids):
        columns = store.settings_columns(experiment.run(run_id).read_record(), out)
        for path in layout.run_cell_paths(run_id):
            frame = pd.read_parquet(path)
            for key, (value, _) in columns.items():
                frame[key] = value
            frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    store.write_frame(out, table)
    return table


def merge_as_analysis_does(experiment: ExperimentFolder) -> store.Merged:
    """The run folders read once (ExperimentFolder.read_runs), then the merge: what an analysis call pays."""
    return store.merge(experiment, experiment.read_runs())


def timed(function, *arguments, **options):
    start = time.perf_counter()
    result = function(*arguments, **options)
    return time.perf_counter() - start, result


def baseline(experiment: ExperimentFolder, folder: Path, run_ids: list[str], measured_runs: int) -> tuple[float, bool]:
    """(the old merge's seconds for every run, whether its rows equal the new table's). It reads each
    cell once, so its time is linear in the cells: measured on `measured_runs` runs, scaled to all."""
    chosen = set(run_ids[:measured_runs])
    seconds, old = timed(old_merge, experiment, folder / "old_table.parquet", chosen)
    new = pd.read_parquet(experiment.table_path, filters=[("run_id", "in", sorted(chosen))])
    return seconds * len(run_ids) / len(chosen), same_rows(old, new)


def same_rows(old: pd.DataFrame, new: pd.DataFrame) -> bool:
    """The per-run table holds exactly the old merge's rows and values."""
    if len(old) != len(new) or set(old.columns) != set(new.columns):
        return False
    joined = old.merge(new, on=store.KEY, suffixes=("_old", "_new"))
    return len(joined) == len(old) and bool((joined["value_old"] == joined["value_new"]).all())


def measurements(folder: Path, runs: int, checkpoints: int, measured_runs: int) -> tuple[list[tuple], bool]:
    """[(measurement, seconds, baseline seconds, target or None)], and whether every check held: nothing
    rewritten when nothing is new, only the new run's part otherwise, the old merge's rows."""
    experiment = ExperimentFolder(folder / "bench")
    settings = grid(runs + 1)
    for one in settings[:runs]:
        fabricate_run(experiment, one, schedule(checkpoints))
    first, _ = timed(merge_as_analysis_does, experiment)
    nothing_new, merged = timed(merge_as_analysis_does, experiment)
    checks = not merged.written and not merged.removed
    fabricate_run(experiment, settings[runs], schedule(checkpoints))
    one_new, merged = timed(merge_as_analysis_does, experiment)
    checks &= merged.written == [settings[runs].run_id]
    write_cell(experiment, settings[0].run_id, 0, seed=1)  # a re-measured cell: its run's part is rewritten
    one_part, state = timed(lambda: store.update_run(experiment, experiment.run(settings[0].run_id).read_record()))
    old_seconds, same = baseline(experiment, folder, [one.run_id for one in settings], measured_runs)
    rows = [("first merge: every part built", first, None), ("(a) merge, nothing new", nothing_new, TARGETS["nothing new"]),
            ("(b) merge, one new run's cells added", one_new, TARGETS["one new run"]),
            ("(c) one run's part (a Slurm array task)", one_part, None)]
    return [(name, seconds, old_seconds, target) for name, seconds, target in rows], checks and state == "written" and same


def main(arguments: list[str]) -> int:
    options = dict(argument.split("=", 1) for argument in arguments)
    runs, checkpoints = int(options.get("runs", 1000)), int(options.get("checkpoints", 12))
    measured_runs = min(runs + 1, int(options.get("baseline_runs", 100)))
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        rows, same = measurements(Path(folder), runs, checkpoints, measured_runs)
        total = time.perf_counter() - start
    print(f"{runs} runs × {checkpoints} cells × {len(LAYERS) * len(METRICS) * len(SPLITS)} rows "
          f"(+ {len(store.SETTINGS_TYPES)} settings columns); whole benchmark {total:.0f} s; baseline: the old merge "
          f"on {measured_runs} runs, scaled to {runs + 1}")
    print(f"{'measurement':<42} {'seconds':>8} {'baseline':>9} {'target':>8}  met")
    met = True
    for name, seconds, baseline, target in rows:
        verdict = "-" if target is None else "met" if seconds <= target else "NOT MET"
        met &= verdict != "NOT MET"
        print(f"{name:<42} {seconds:>8.2f} {baseline:>9.2f} {('≤ %g' % target) if target else '-':>8}  {verdict}")
    print("checks: nothing rewritten when nothing is new, only the new run's part, the old merge's rows: "
          + ("held" if same else "FAILED"))
    return 0 if met and same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
