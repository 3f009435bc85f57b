"""The metrics store: one Parquet file per (run, checkpoint), and the table: one Parquet part per run.

    outputs/<experiment>/metrics/<run_id>/iteration_00000256.parquet   one checkpoint's rows (a "cell")
    outputs/<experiment>/metrics.parquet/<run_id>.parquet               one run's fresh rows + its settings
    outputs/<experiment>/metrics.parquet/.<run_id>.json                 what that part was built from

`pandas.read_parquet("outputs/<experiment>/metrics.parquet")` reads the folder as one table (Parquet
readers skip the hidden files). Every part has the same column types (settings typed by their
`conf.Settings` field, cell numbers as float64 but iteration, stage and layer_index as int64), since
a dataset reader takes the types of one part and casts the others to them.

Each row carries the recipe of its metric (metrics/registry.py: the metric's version and the analysis
options its statistics depend on) and those options as words (`options`: `layers=blocks.0,blocks.1`, '' under
the defaults). A call asks its question under its options: a metric whose rows under them are stale or missing
is computed again, and its new rows replace only the rows of the same metric and options (`combine`: a newer
version of the metric, the same question); the rows measured under other options, by another call, stay
beside them. No call deletes what another call measured. Cells are
written atomically; a lock per cell (non-blocking: another process already on it is left to it)
keeps two analysis processes from doing the same work twice: the caller checks freshness again once
it holds the lock, since the other process may have finished the cell between the first look and
the lock.

The table holds every current row, whichever call measured it: computed from the checkpoint the run's manifest
lists now (a run folder that is gone keeps its cells' rows, without settings), under the recipe its metric has
now for the row's options (`registry.current_recipe`: a row of an older version of a metric is left out until
a call under the same options measures it again). It does not depend on the call: an analysis under other
options, of other metrics or of one run adds rows and takes none away. The figures and `analysis.read_table`
read one question of it: the rows under one set of options (findings/table.py `question_rows`). A run whose
settings file is unusable is left out (logged), as is a cell that does not read.

Cost: a run's part is rebuilt only when its signature changed: the metrics' versions, and the size and
modification time of its cells, settings file and manifest (a copy that keeps modification times,
such as `cp -p` or `rsync -t`, is not rebuilt). Looking at an unchanged run is a handful of `stat`
calls and one small JSON read; a Slurm array task (update_run) rebuilds only its own run's part.
Each part is rebuilt under its own lock, and the signature is taken again inside it, so two processes
at once end with every part built from every cell written before either took the lock.

Content, not stamps: each cell is written with a digest file beside it (iteration_*.sha256, the sha256
of its bytes). Whoever reads a cell's rows checks them against it: the freshness check before measuring
(`computed`, which reads every cell of the runs measured on every call anyway) and the merge's rebuild of a
part (`read_cell`). A cell changed after it was measured (edited in a notebook and written back, even with
its size and modification time restored) is named in one warning, left out of the table and measured
again; its run's part, when its stamps did not change, keeps the rows measured before until the cell is
measured again, as is a cell without its digest file (not written by the analysis). Cost: one sha256 of a small file per cell read; the merge with nothing new still only stats.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as parquet

from conf.global_settings import SETTING_FIELDS
from conf.analysis import Analysis
from folders import ExperimentFolder, RunRecord
from measuring.layout import StoreLayout
from metrics import registry
from utils import (atomic_write_bytes, atomic_write_json, atomic_write_text, current_record, exclusive_lock,
                   file_stamp, signature)

logger = logging.getLogger(__name__)
KEY = ["run_id", "iteration", "layer", "metric", "split", "options"]
STORE_VERSION = 3  # in every part's signature: bumped when what a part holds changes, so every part is rebuilt once
INTEGER_COLUMNS = ("iteration", "stage", "layer_index")  # the cells' other numbers are float64 in the table


@dataclasses.dataclass
class Merged:
    """What a merge did: rows and parts of the runs it looked at, the runs whose part it rewrote or removed."""

    rows: int = 0
    parts: int = 0
    written: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)


# -- cells ---------------------------------------------------------------------------------------------


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def write_frame(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_bytes(path, parquet_bytes(frame))


def write_cell(path: Path, frame: pd.DataFrame) -> None:
    """Write a cell and its digest (StoreLayout.cell_digest_path: the sha256 of its bytes). The digest file
    lists the old cell's digest beside the new one while the cell is replaced, so a reader between the two
    writes (another process, or a kill) never takes either cell for one changed by hand; then the new alone."""
    payload = parquet_bytes(frame)
    digest_path, new = StoreLayout.cell_digest_path(path), hashlib.sha256(payload).hexdigest()
    old = recorded_digests(digest_path)  # those it accepts now (two only after a kill between the writes)
    atomic_write_text(digest_path, "\n".join([new, *old]) + "\n")
    atomic_write_bytes(path, payload)
    atomic_write_text(digest_path, new + "\n")


def recorded_digests(digest_path: Path) -> list[str]:
    """The digests a cell's digest file accepts; [] when it is missing or unreadable (no content matches)."""
    try:
        return digest_path.read_text().split()
    except (OSError, UnicodeDecodeError):
        return []


REPORTED: set[tuple[str, str]] = set()  # (cell, its content's sha256) already named by this process


def verified_bytes(path: Path) -> bytes | None:
    """The cell's bytes when they are those the analysis wrote (its digest file says so); None, named in one
    line (once per process and content), for a cell changed after it was measured: its rows are left out of
    the table and it is measured again. OSError (a missing cell) is the caller's."""
    payload = path.read_bytes()
    accepted = recorded_digests(StoreLayout.cell_digest_path(path))
    actual = hashlib.sha256(payload).hexdigest()
    if actual in accepted:
        return payload
    if (str(path), actual) not in REPORTED:
        REPORTED.add((str(path), actual))
        why = "its content no longer matches" if accepted else "it has no readable"
        logger.warning("%s was changed after it was measured (%s %s); it is left out of the table and measured "
                       "again", path, why, StoreLayout.cell_digest_path(path).name)
    return None


def computed(path: Path, checkpoint_sha256: str) -> dict[str, set[str]]:
    """{metric: its recipes} of the cell's rows computed from this very checkpoint ({} for a missing, unreadable
    or edited cell, or one of another checkpoint: everything is computed again)."""
    if not path.exists():
        return {}
    try:
        payload = verified_bytes(path)
        if payload is None:  # changed after it was measured (logged)
            return {}
        columns = parquet.read_table(pa.BufferReader(payload),
                                     columns=["metric", "recipe", "options", "checkpoint_sha256"]).to_pandas()
    except Exception:  # unreadable (a foreign or damaged file): compute it again
        return {}
    if set(columns["checkpoint_sha256"]) != {checkpoint_sha256}:
        return {}
    return columns.groupby("metric")["recipe"].agg(set).to_dict()


def pending(path: Path, checkpoint_sha256: str, recipes: dict[str, str], names) -> list[str]:
    """The metrics among `names` whose rows in the cell under `recipes` are missing (stale ones included)."""
    done = computed(path, checkpoint_sha256)
    return [name for name in names if recipes[name] not in done.get(name, ())]


def combine(path: Path, frame: pd.DataFrame, checkpoint_sha256: str) -> pd.DataFrame:
    """The cell's rows after measuring `frame`: the rows it held from the same checkpoint but those of `frame`'s
    (metric, options) pairs, which `frame` replaces (the same question, asked again: a newer version of the
    metric); the rows of other options stay beside them."""
    cell = read_cell(path) if path.exists() else None
    if cell is None:
        return frame
    old = cell.to_pandas()
    if not {"metric", "options"} <= set(old) or set(old.get("checkpoint_sha256", ())) != {checkpoint_sha256}:
        return frame
    asked = pd.MultiIndex.from_frame(frame[["metric", "options"]])
    kept = old[~pd.MultiIndex.from_frame(old[["metric", "options"]]).isin(asked)]
    return pd.concat([kept, frame], ignore_index=True) if len(kept) else frame


def note(path: Path, column: str, text: str, options: dict[str, str]) -> bool:
    """Set a text column of a cell's rows of one question (each metric's rows under `options`, {metric: options
    words}: rows of other calls keep theirs), under the cell's lock (a busy, missing or unreadable cell is left
    alone); rewritten only when one of them says otherwise. True when it was rewritten."""
    with claim(path) as mine:
        if not mine or not path.exists():
            return False
        try:  # three columns first: a call with nothing new says what each cell says already (the common case)
            said = parquet.read_table(path, columns=["metric", "options", column]).to_pandas()
        except Exception:  # no such column, or unreadable: the next measurement rewrites it
            return False
        if (said.loc[said["options"] == said["metric"].map(options), column] == text).all():
            return False
        cell = read_cell(path)
        if cell is None:
            return False
        rows = cell.to_pandas()
        rows.loc[rows["options"] == rows["metric"].map(options), column] = text
        write_cell(path, rows)
        return True


def claim(path: Path):
    """A context yielding True when this process holds the cell's lock, False when another process does."""
    return exclusive_lock(StoreLayout.cell_lock_path(path))


def read_cell(path: Path) -> pa.Table | None:
    """One cell's rows; None (logged) for a file that does not read or was changed after it was measured
    (its bytes no longer match its digest): the next analysis measures it again."""
    try:
        payload = verified_bytes(path)  # read once: hashed, then parsed from memory
        if payload is None:
            return None
        with parquet.ParquetFile(pa.BufferReader(payload)) as cell:  # half read_table's time: no dataset discovery
            return cell.read()
    except (pa.ArrowException, OSError) as error:
        logger.warning("%s does not read (%s); left out of the table, the next analysis measures it again", path, error)
        return None


def fresh_rows(cell: pa.Table, listed: dict[int, str] | None) -> pa.Table | None:
    """The cell's current rows: computed from the checkpoint the manifest lists for its iteration (`listed` None:
    no manifest to check against) under the recipe their metric has now for their options (every call's rows,
    but those of an older version of a metric); None when there are none."""
    try:
        iterations, digests = (set(cell.column(name).unique().to_pylist()) for name in ("iteration", "checkpoint_sha256"))
        metrics, recipes, options = (cell.column(name).to_pylist() for name in ("metric", "recipe", "options"))
    except KeyError:  # not one of our cells
        return None
    if listed is not None and not (len(iterations) == 1 and digests == {listed.get(next(iter(iterations)))}):
        return None
    current = {pair: current_recipe(*pair) for pair in set(zip(metrics, options))}  # a few pairs per cell
    keep = pa.array([recipe == current[pair] for recipe, pair in zip(recipes, zip(metrics, options))], pa.bool_())
    rows = cell.filter(keep)
    return rows if rows.num_rows else None


# What the registry says now, computed once per process and registry (a merge of a large grid asks for the same
# few (metric, options) pairs in every cell: 60 us each).
RECIPE_CACHE: dict = {}


def current_recipe_cache() -> dict:
    """{"versions": every metric's recipe under the defaults, (metric, options): its current recipe, ...} for
    the metrics registered now (a new registration starts a new cache)."""
    key = tuple(map(id, registry.METRICS.values()))
    if RECIPE_CACHE.get("key") != key:
        RECIPE_CACHE.clear()
        RECIPE_CACHE.update(key=key, versions=sorted(registry.recipes(Analysis()).items()))
    return RECIPE_CACHE


def current_recipe(metric: str, options: str) -> str | None:
    """registry.current_recipe, remembered."""
    cache = current_recipe_cache()
    if (metric, options) not in cache:
        cache[metric, options] = registry.current_recipe(metric, options)
    return cache[metric, options]


# -- the table: merge (every run) and update_run (one run) -----------------------------------------------


def merge(experiment: ExperimentFolder, runs: dict[str, RunRecord], *, leave=frozenset()) -> Merged:
    """Bring every run's part of the table up to date with its cells' current rows, each run as `runs` holds it (its
    RunRecord, read once by the caller: ExperimentFolder.read_runs; a run with cells and no record is a folder that
    is gone); the runs in `leave` are left to their own Slurm array tasks. Unchanged runs cost a few stats each, so
    a call with nothing new stays quick on a large grid."""
    prepare_table(experiment)
    merged = Merged()
    layout = StoreLayout(experiment)
    for run_id in sorted({*layout.cell_run_ids(), *layout.table_run_ids()} - set(leave)):
        state, rows = refresh_part(layout, run_id, runs.get(run_id))
        merged.rows, merged.parts = merged.rows + rows, merged.parts + (rows > 0)
        if state == "written":
            merged.written.append(run_id)
        elif state == "removed":
            merged.removed.append(run_id)
    return merged


def update_run(experiment: ExperimentFolder, run: RunRecord) -> str:
    """One run's part only (a Slurm array task's share): kept, written, removed or absent."""
    prepare_table(experiment)
    return refresh_part(StoreLayout(experiment), run.run_id, run)[0]


def prepare_table(experiment: ExperimentFolder) -> None:
    """The table folder exists; FileExistsError naming it when a file stands in its place (left as it is: the
    environment's fault, which analysis.py reports in one line, exit 1)."""
    experiment.table_path.mkdir(parents=True, exist_ok=True)


def refresh_part(layout: StoreLayout, run_id: str, run: RunRecord | None) -> tuple[str, int]:
    """(kept | written | removed | absent, rows of the run's part). Rebuilt only when the run's
    signature changed; taken again under the part's lock, since another process may have rebuilt
    it while this one waited."""
    index = current_index(layout, run_id, run_signature(layout, run_id, run))
    if index is not None:
        return "kept", index["rows"]
    with exclusive_lock(layout.part_lock_path(run_id), wait=True):
        built_from = run_signature(layout, run_id, run)
        index = current_index(layout, run_id, built_from)
        if index is not None:
            return "kept", index["rows"]
        return rebuild_part(layout, run_id, run, built_from)


def run_signature(layout: StoreLayout, run_id: str, run: RunRecord | None) -> str:
    """A hash of everything a run's part is built from: its cells' names, sizes and modification
    times and those of their digest files, its settings file and manifest as the record read them (a checkpoint
    re-made makes its cell stale), the metrics' versions (their recipes under the defaults change with any of them)."""
    return signature({"store": STORE_VERSION, "versions": current_recipe_cache()["versions"],
                      "run": list(run.stamps) if run is not None else None,
                      "cells": [[path.name, file_stamp(path), file_stamp(StoreLayout.cell_digest_path(path))]
                                for path in layout.run_cell_paths(run_id)]})


def current_index(layout: StoreLayout, run_id: str, built_from: str) -> dict | None:
    """The run's index when its part is up to date: built from this signature, and the part on disk
    is the one written then (a part deleted or replaced by hand is rebuilt: utils.current_record)."""
    return current_record(layout.part_index_path(run_id), built_from, layout.part_path(run_id))


def rebuild_part(layout: StoreLayout, run_id: str, run: RunRecord | None, built_from: str) -> tuple[str, int]:
    """Write the run's part from its fresh cells (or remove it when it has none), then its index:
    the index comes second, so a process killed in between leaves a part that is rebuilt, never one
    that looks up to date and is not."""
    part, index_path = layout.part_path(run_id), layout.part_index_path(run_id)
    had_part = part.exists()
    table = run_rows(layout, run_id, run)
    if table is not None:
        buffer = io.BytesIO()
        parquet.write_table(table, buffer)
        atomic_write_bytes(part, buffer.getvalue())
    else:
        part.unlink(missing_ok=True)
    if layout.run_cell_paths(run_id):
        atomic_write_json(index_path, {"built_from": built_from, "output": file_stamp(part),
                                       "rows": table.num_rows if table is not None else 0})
    else:  # no cells left: nothing to remember, so the run drops out of later merges
        index_path.unlink(missing_ok=True)
    state = "written" if table is not None else "removed" if had_part else "absent"
    return state, table.num_rows if table is not None else 0


# -- one run's rows ------------------------------------------------------------------------------------


def run_rows(layout: StoreLayout, run_id: str, run: RunRecord | None) -> pa.Table | None:
    """The run's current rows (`fresh_rows`: every call's) with its settings as columns (`run`: its record, None for
    a run folder that is gone); None when there are none, or its settings file is unusable (logged)."""
    settings = settings_columns(run, layout.experiment.table_path)
    if settings is None:
        return None
    listed = listed_checkpoints(run)
    cells = [normalised(rows) for path in layout.run_cell_paths(run_id)
             if (cell := read_cell(path)) is not None and (rows := fresh_rows(cell, listed)) is not None]
    if not cells:
        return None
    table = pa.concat_tables(cells, promote_options="default")  # a cell without a column gets nulls there
    for name, (value, data_type) in settings.items():
        column = pa.array([value] * table.num_rows, type=data_type)
        position = table.schema.get_field_index(name)
        table = table.set_column(position, name, column) if position >= 0 else table.append_column(name, column)
    return table


def listed_checkpoints(run: RunRecord | None) -> dict[int, str] | None:
    """{iteration: sha256} the run's manifest lists; None when there is no usable manifest (a run folder
    that is gone keeps its cells' rows, as the settings do)."""
    if run is None or run.checkpoints is None:
        if run is not None and run.settings is not None and run.stamps[1] is not None:
            logger.warning("%s; the cells of %s are not checked against it", run.problem, run.run_id)
        return None
    return {iteration: entry["sha256"] for iteration, entry in run.checkpoints.items()}


def normalised(cell: pa.Table) -> pa.Table:
    """The cell with the table's types, so every part agrees: iteration, stage, layer_index int64,
    other numbers float64 (a detail column whole in one cell and partly missing in another would
    otherwise be int64 here and float64 there), text large_string, no pandas metadata."""
    def table_type(field: pa.Field) -> pa.DataType:
        if field.name in INTEGER_COLUMNS:
            return pa.int64()
        if pa.types.is_integer(field.type) or pa.types.is_floating(field.type) or pa.types.is_null(field.type):
            return pa.float64()
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            return pa.large_string()
        return field.type

    return cell.cast(pa.schema([pa.field(field.name, table_type(field)) for field in cell.schema]))


def settings_type(default) -> pa.DataType:
    """A settings column's type from its field's default (bool before int: a bool is an int)."""
    for python_type, data_type in ((bool, pa.bool_()), (int, pa.int64()), (float, pa.float64())):
        if isinstance(default, python_type):
            return data_type
    return pa.large_string()  # text, and lists as JSON text


SETTINGS_TYPES = {name: settings_type(field.default) for name, field in SETTING_FIELDS.items()}


def settings_columns(run: RunRecord | None, table_path: Path) -> dict[str, tuple] | None:
    """A run's settings as {column: (value, type)}: lists as JSON text, a float setting given as an
    int as a float, so every part types a column alike. All null for a run folder that is gone (its
    rows keep no settings); None when its settings file is unusable: its rows are left out (logged),
    since settings that do not match the run id would mislabel every row."""
    if run is None:
        return {name: (None, data_type) for name, data_type in SETTINGS_TYPES.items()}
    if run.settings is None:
        logger.warning("%s; its rows are left out of %s", run.problem, table_path)
        return None
    record = run.settings.to_record()
    return {name: (json.dumps(record[name]) if isinstance(record[name], list) else record[name], data_type)
            for name, data_type in SETTINGS_TYPES.items()}
