"""The names of the analysis's own files, inside the folders an experiment gives it (folders/__init__.py's
ExperimentFolder names those folders: metrics/, metrics.parquet/, similarity.parquet/):

    metrics/<run_id>/iteration_00000256.parquet       one checkpoint's metric rows (a cell)
    metrics/<run_id>/iteration_00000256.sha256        the sha256 of the cell's bytes as written (measuring/store.py)
    metrics/<run_id>/iteration_00000256.snapshot.npz  its probe snapshot (measuring/snapshots.py) under the default
                                                      options; under others, .snapshot-<hash of the options>.npz
    metrics/<run_id>/iteration_00000256.lock          held while a process measures that cell
    metrics.parquet/<run_id>.parquet                  one run's fresh rows + its settings as columns
    metrics.parquet/.<run_id>.json                    what that part was built from (cells' sizes and times, versions)
    metrics.parquet/.<run_id>.lock                    held while a process rebuilds the part
    similarity.parquet/<run_id>.parquet, .<run_id>.json   the same, from the probe snapshots

Parquet readers skip names starting with a dot, so the hidden files never show up as rows.

    layout = StoreLayout(ExperimentFolder(path)); layout.cell_path(run_id, 256)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from folders import ExperimentFolder


class StoreLayout:
    """The store's file names in one experiment's analysis folders."""

    def __init__(self, experiment: ExperimentFolder):
        self.experiment = experiment

    def cell_path(self, run_id: str, iteration: int) -> Path:
        """The metrics of one checkpoint (measuring/store.py)."""
        return self.experiment.metrics_path / run_id / f"iteration_{iteration:08d}.parquet"

    def snapshot_path(self, run_id: str, iteration: int, options: str = "") -> Path:
        """One checkpoint's probe snapshot: the probe subset's pooled features per layer (measuring/snapshots.py)."""
        return self.cell_snapshot_path(self.cell_path(run_id, iteration), options)

    @staticmethod
    def cell_snapshot_path(cell_path: Path, options: str = "") -> Path:
        """The probe snapshot beside a cell taken under the analysis options `options` (the `options` words of its
        metric's rows, '' for the defaults): one file per options, so a call under others adds one beside it."""
        if not options:
            return cell_path.with_suffix(".snapshot.npz")
        return cell_path.with_suffix(f".snapshot-{hashlib.sha256(options.encode()).hexdigest()[:10]}.npz")

    def run_snapshot_paths(self, run_id: str) -> list[Path]:
        """One run's snapshots under every options, sorted by iteration."""
        return sorted((self.experiment.metrics_path / run_id).glob("iteration_*.snapshot*.npz"))

    def similarity_part_path(self, run_id: str) -> Path:
        """One run's rows of the similarity table; its index beside it, hidden, as the metrics table's."""
        return self.experiment.similarity_path / f"{run_id}.parquet"

    def similarity_index_path(self, run_id: str) -> Path:
        return self.experiment.similarity_path / f".{run_id}.json"

    @staticmethod
    def cell_digest_path(cell_path: Path) -> Path:
        """The sha256 of the cell's bytes as the analysis wrote them: a cell whose bytes no longer match it was
        changed after it was measured (measuring/store.py). Not `iteration_*.parquet`: no cell glob lists it."""
        return cell_path.with_suffix(".sha256")

    @staticmethod
    def cell_lock_path(cell_path: Path) -> Path:
        """The lock an analysis process holds while it measures that cell."""
        return cell_path.with_suffix(".lock")

    def cell_run_ids(self) -> list[str]:
        """The run ids that have a folder of cells, sorted."""
        try:
            return sorted(entry.name for entry in os.scandir(self.experiment.metrics_path) if entry.is_dir())
        except FileNotFoundError:
            return []

    def run_cell_paths(self, run_id: str) -> list[Path]:
        """One run's cells, sorted by iteration."""
        return sorted((self.experiment.metrics_path / run_id).glob("iteration_*.parquet"))

    # -- the table: a folder of per-run parts ---------------------------------------------------
    def part_path(self, run_id: str) -> Path:
        """One run's rows of the table."""
        return self.experiment.table_path / f"{run_id}.parquet"

    def part_index_path(self, run_id: str) -> Path:
        """What the run's part was built from. Hidden: Parquet readers skip names starting with a dot."""
        return self.experiment.table_path / f".{run_id}.json"

    def part_lock_path(self, run_id: str) -> Path:
        """The lock a process holds while it rebuilds that run's part."""
        return self.experiment.table_path / f".{run_id}.lock"

    def table_run_ids(self) -> list[str]:
        """The run ids that have a part or an index in the table, sorted."""
        try:
            names = [entry.name for entry in os.scandir(self.experiment.table_path)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        parts = {name.removesuffix(".parquet") for name in names if name.endswith(".parquet") and name[0] != "."}
        indexes = {name[1:].removesuffix(".json") for name in names if name.endswith(".json") and name[0] == "."}
        return sorted(parts | indexes)
