"""The metrics store: one Parquet file per (run, checkpoint), merged into one tidy table (merges take turns under `metrics.lock`).

    outputs/<experiment>/metrics/<run_id>/iteration_00000256.parquet   one checkpoint's rows
    outputs/<experiment>/metrics.parquet                                all of them + the runs' settings

A checkpoint's file is fresh when it was computed under the current recipe (metric version +
analysis options) from the checkpoint whose sha256 the manifest lists; otherwise it is computed
again. Files are written atomically; a lock per checkpoint (non-blocking: another process already
on it is left to it) keeps two analysis processes from doing the same work twice.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from checkpointing import ExperimentFolder
from utils import atomic_write_bytes, exclusive_lock

KEY = ["run_id", "iteration", "layer", "metric", "split"]


def write_frame(path: Path, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())


def is_fresh(path: Path, recipe: str, checkpoint_sha256: str) -> bool:
    """Computed under this recipe from this very checkpoint (metadata read without the rows)."""
    if not path.exists():
        return False
    try:
        import pyarrow.parquet as parquet

        columns = parquet.read_table(path, columns=["recipe", "checkpoint_sha256"]).to_pandas()
    except Exception:  # unreadable (a foreign or damaged file): compute it again
        return False
    return bool(len(columns)) and set(columns["recipe"]) == {recipe} and set(columns["checkpoint_sha256"]) == {checkpoint_sha256}


def claim(path: Path):
    """A context yielding True when this process holds the cell's lock, False when another process does."""
    return exclusive_lock(path.with_suffix(".lock"))


def merge(experiment_dir: Path) -> pd.DataFrame:
    """Every checkpoint file of the experiment + each run's settings as columns -> metrics.parquet.

    Merges take turns (a waiting lock): otherwise a process that listed the cells before another
    process's last cell was written could write its table after that process's complete one."""
    with exclusive_lock(ExperimentFolder(experiment_dir).merge_lock_path, wait=True):
        return _merge(experiment_dir)


def _merge(experiment_dir: Path) -> pd.DataFrame:
    frames, experiment = [], ExperimentFolder(experiment_dir)
    for path in experiment.cell_paths():
        frame = pd.read_parquet(path)
        run = experiment.run(experiment.run_id_of_cell(path))
        if run.settings_path.exists():
            for key, value in run.read_settings().to_record().items():
                frame[key] = json.dumps(value) if isinstance(value, list) else value
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*KEY, "value"])
    write_frame(experiment.table_path, table)
    return table
