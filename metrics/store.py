"""The metrics store: one Parquet file per (run, checkpoint), merged into one tidy table (merges take turns under `metrics.lock`).

    outputs/<experiment>/metrics/<run_id>/iteration_00000256.parquet   one checkpoint's rows
    outputs/<experiment>/metrics.parquet                                all of them + the runs' settings

A checkpoint's file is fresh when it was computed under the current recipe (metric version +
analysis options) from the checkpoint whose sha256 the manifest lists; otherwise it is computed
again. Files are written atomically; a lock per checkpoint (non-blocking: another process already
on it is left to it) keeps two analysis processes from doing the same work twice: the caller checks
freshness again once it holds the lock, since the other process may have finished the cell between
the first look and the lock. A run whose settings file is unusable is left out of the merged table
(logged), as is a cell that does not read; the others are merged.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pandas as pd

from checkpointing import ExperimentFolder, RunFolder, RunFolderError
from utils import atomic_write_bytes, exclusive_lock

logger = logging.getLogger(__name__)
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
    return exclusive_lock(ExperimentFolder.cell_lock_path(path))


def merge(experiment_dir: Path) -> pd.DataFrame:
    """Every checkpoint file of the experiment + each run's settings as columns -> metrics.parquet.

    Merges take turns (a waiting lock): otherwise a process that listed the cells before another
    process's last cell was written could write its table after that process's complete one."""
    with exclusive_lock(ExperimentFolder(experiment_dir).merge_lock_path, wait=True):
        return _merge(experiment_dir)


def _merge(experiment_dir: Path) -> pd.DataFrame:
    frames, experiment = [], ExperimentFolder(experiment_dir)
    columns_of: dict[str, dict | None] = {}  # run id -> its settings as columns (read once per run), None: unusable
    for path in experiment.cell_paths():
        run_id = experiment.run_id_of_cell(path)
        if run_id not in columns_of:
            columns_of[run_id] = settings_columns(experiment.run(run_id), experiment.table_path)
        frame = read_cell(path) if columns_of[run_id] is not None else None
        if frame is None:
            continue
        for key, value in columns_of[run_id].items():
            frame[key] = value
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*KEY, "value"])
    write_frame(experiment.table_path, table)
    return table


def settings_columns(run: RunFolder, table_path: Path) -> dict | None:
    """A run's settings as table columns (lists as JSON text); {} for a run folder that is gone (its
    rows keep no settings), None when its settings file is unusable: its rows are left out (logged),
    since settings that do not match the run id would mislabel every row."""
    if not run.settings_path.exists():
        return {}
    try:
        record = run.read_settings().to_record()
    except RunFolderError as error:
        logger.warning("%s; its rows are left out of %s", error, table_path)
        return None
    return {key: json.dumps(value) if isinstance(value, list) else value for key, value in record.items()}


def read_cell(path: Path) -> pd.DataFrame | None:
    """One cell's rows; None (logged) for a file that does not read: the next analysis measures it again."""
    from pyarrow import ArrowException

    try:
        return pd.read_parquet(path)
    except ArrowException as error:
        logger.warning("%s does not read (%s); left out of the table, the next analysis measures it again", path, error)
        return None
