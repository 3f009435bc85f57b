"""Probe snapshots and the similarity table built from them (metrics/similarity.py has the CKA itself).

A snapshot, `<out_dir>/<experiment>/metrics/<run_id>/iteration_<8 digits>.snapshot.npz`, is written beside
the checkpoint's cell when `cka_previous_layer` is measured; under other analysis options (`layers=`,
`probe_dimensions=`, ...) in a file of its own beside it (measuring/layout.py), so no call replaces another's. It
holds:

    meta                 JSON text: iteration, epoch, stage, the recipe of cka_previous_layer and its options
                         (the `options` words of its rows, '' for the defaults), the checkpoint's sha256
    indices, labels      int64 [n]: the probe subset's rows of the test split and their labels
    layer:<name>         float16 [n, d]: each layer's pooled features (d <= probe_dimensions), depth order

Its size is n × Σ_layers d × 2 bytes: with the defaults (n = 1024, d <= 512) at most 1 MiB per layer and
checkpoint, e.g. 6.2 MiB per checkpoint of CONV-4-32 on 32-pixel images (input 507, stem and 4 blocks of 512,
logits 10).

`similarity.parquet` (a folder of per-run parts, rebuilt only when a run's snapshots change) has a row per
(run_id, iteration, comparison, layer, other_layer, other_iteration): comparison `layers` = CKA of two layers
at one checkpoint (every ordered pair, the diagonal included), `to_final` = CKA of a layer with the same layer
at the run's last snapshot of the same options; `cka` (linear) and `cka_debiased`, the snapshots' `options`,
with the run's settings as columns. It holds every current snapshot's rows, whichever call measured it: a call
under other options adds rows beside the others.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from folders import CorruptFile, ExperimentFolder, RunRecord
from measuring.layout import StoreLayout
from metrics.similarity import cka_vectors, probe_subset
from utils import atomic_write_bytes, atomic_write_json, current_record, file_stamp, signature

SNAPSHOT_VERSION = 2  # in every snapshot and the similarity parts' signature: bumped when what a snapshot holds changes
SNAPSHOT_METRIC = "cka_previous_layer"  # the metric whose measurement writes the snapshot (its recipe is the snapshot's)


@dataclass
class Snapshot:
    iteration: int
    epoch: float
    stage: int
    recipe: str
    options: str  # the analysis options it was taken under, as its rows' `options` words ('' for the defaults)
    checkpoint_sha256: str
    indices: np.ndarray  # int64 [n]
    labels: np.ndarray  # int64 [n]
    layers: dict[str, np.ndarray]  # float16 [n, d] per layer, depth order


def write_snapshot(path: Path, snapshot: Snapshot) -> None:
    """The snapshot as one .npz, written atomically (a reader never sees half of it)."""
    meta = {"version": SNAPSHOT_VERSION, "iteration": snapshot.iteration, "epoch": snapshot.epoch,
            "stage": snapshot.stage, "recipe": snapshot.recipe, "options": snapshot.options, "checkpoint_sha256": snapshot.checkpoint_sha256,
            "layers": list(snapshot.layers)}
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), indices=snapshot.indices, labels=snapshot.labels,
             **{f"layer:{name}": values for name, values in snapshot.layers.items()})
    atomic_write_bytes(path, buffer.getvalue())


def snapshot_of(layers: dict, test, checkpoint: dict, recipe: str, options: str, checkpoint_sha256: str,
                subset_size: int) -> Snapshot | None:
    """The snapshot of one measured checkpoint from the engine's {layer: LayerResults} (metrics/engine.py
    `measure_layers`); None when no probe snapshot was gathered (not selected, or probe_subset_size=0)."""
    features = {name: statistic.features for name, layer in layers.items()
                if (statistic := layer.statistics.get("probe_snapshot")) is not None and statistic.features is not None}
    if not features:
        return None
    indices = probe_subset(len(test.labels), subset_size)
    return Snapshot(int(checkpoint["iteration"]), float(checkpoint["epoch"]), int(checkpoint["stage"]), recipe,
                    options, checkpoint_sha256, indices.numpy(), test.labels.cpu()[indices].numpy(),
                    {name: values.numpy() for name, values in features.items()})


def snapshot_fresh(path: Path, recipe: str, checkpoint_sha256: str) -> bool:
    """Whether the snapshot at `path` exists, is readable and was taken under `recipe` of that checkpoint."""
    try:
        meta = read_snapshot(path, meta_only=True)
    except (FileNotFoundError, CorruptFile):
        return False
    return meta.get("recipe") == recipe and meta.get("checkpoint_sha256") == checkpoint_sha256


def read_snapshot(path: Path, meta_only: bool = False):
    """The snapshot at `path` (with meta_only, its meta dict alone: no array is read); CorruptFile naming
    it when it cannot be read or is of another SNAPSHOT_VERSION."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            meta = json.loads(str(arrays["meta"]))
            if meta["version"] != SNAPSHOT_VERSION:
                raise ValueError(f"version {meta['version']}, not {SNAPSHOT_VERSION}")
            if meta_only:
                return meta
            layers = {name: arrays[f"layer:{name}"] for name in meta["layers"]}
            return Snapshot(int(meta["iteration"]), float(meta["epoch"]), int(meta["stage"]), meta["recipe"],
                            meta["options"], meta["checkpoint_sha256"], arrays["indices"], arrays["labels"], layers)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise CorruptFile(f"{path} is not a readable probe snapshot ({type(error).__name__}); delete it and run the "
                          "analysis again (it measures that checkpoint's snapshot anew)") from None


def snapshot_rows(snapshots: list[Snapshot]) -> pd.DataFrame:
    """One run's similarity rows: every ordered pair of layers at each snapshot, and each layer against
    the same layer at the last snapshot (by iteration)."""
    snapshots = sorted(snapshots, key=lambda snapshot: snapshot.iteration)
    final = snapshots[-1]
    final_vectors = vectors_of(final)
    rows = []
    for snapshot in snapshots:
        vectors = final_vectors if snapshot is final else vectors_of(snapshot)
        names = list(vectors)
        linear = torch.stack([vectors[name][0] for name in names])
        debiased = torch.stack([vectors[name][1] for name in names])
        pairs_linear, pairs_debiased = (linear @ linear.T).tolist(), (debiased @ debiased.T).tolist()
        base = {"iteration": snapshot.iteration, "epoch": snapshot.epoch, "stage": snapshot.stage}
        for row, name in enumerate(names):
            rows += [{**base, "comparison": "layers", "layer": name, "layer_index": row, "other_layer": other,
                      "other_iteration": snapshot.iteration, "cka": pairs_linear[row][column],
                      "cka_debiased": pairs_debiased[row][column]} for column, other in enumerate(names)]
            if name in final_vectors:
                rows.append({**base, "comparison": "to_final", "layer": name, "layer_index": row, "other_layer": name,
                             "other_iteration": final.iteration,
                             "cka": float(vectors[name][0] @ final_vectors[name][0]),
                             "cka_debiased": float(vectors[name][1] @ final_vectors[name][1])})
    return pd.DataFrame(rows)


def vectors_of(snapshot: Snapshot) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {name: cka_vectors(torch.from_numpy(values)) for name, values in snapshot.layers.items()}


def usable_snapshots(experiment: ExperimentFolder, run_id: str, listed, options: str | None = None) -> list[Snapshot]:
    """The run's current snapshots (taken under the recipe cka_previous_layer has now for their options) of
    checkpoints still listed with the same sha256 (`listed` None: no manifest to check against), of the analysis
    options `options` (None: every options); an unreadable one is left out (it is measured again: analysis.py
    treats it as missing)."""
    from measuring.store import current_recipe

    kept = []
    for path in StoreLayout(experiment).run_snapshot_paths(run_id):
        try:
            snapshot = read_snapshot(path)
        except CorruptFile:
            continue
        current = snapshot.recipe == current_recipe(SNAPSHOT_METRIC, snapshot.options)
        asked = options is None or snapshot.options == options
        if current and asked and (listed is None or listed.get(snapshot.iteration) == snapshot.checkpoint_sha256):
            kept.append(snapshot)
    return kept


def similarity_rows(snapshots: list[Snapshot]) -> pd.DataFrame:
    """One run's similarity rows, options by options (each compared with the last snapshot of its own), with the
    options their numbers depend on (`depends_on`, as the metrics table's rows say them)."""
    from metrics import registry

    groups = {}
    for snapshot in snapshots:
        groups.setdefault(snapshot.options, []).append(snapshot)
    names = " ".join(registry.option_names(registry.METRICS[SNAPSHOT_METRIC]))
    return pd.concat([snapshot_rows(group).assign(options=options, depends_on=names)
                      for options, group in sorted(groups.items())], ignore_index=True)


def update_similarity(experiment: ExperimentFolder, runs: dict[str, RunRecord], run_ids=None) -> int:
    """Bring each run's part of similarity.parquet up to date with its current snapshots, of every options, each run
    as `runs` holds it (store.merge's rule); returns the rows of the parts brought up to date. A run whose snapshots
    did not change costs a few stats."""
    from measuring.store import current_recipe_cache, listed_checkpoints, settings_columns

    layout, total = StoreLayout(experiment), 0
    if run_ids is None:
        parts = experiment.similarity_path.glob("*.parquet") if experiment.similarity_path.is_dir() else []
        run_ids = sorted({*layout.cell_run_ids(), *(path.stem for path in parts)})
    for run_id in run_ids:
        paths = layout.run_snapshot_paths(run_id)
        if not paths:  # none (or the run's cells are gone): no part, and nothing to remember
            layout.similarity_part_path(run_id).unlink(missing_ok=True)
            layout.similarity_index_path(run_id).unlink(missing_ok=True)
            continue
        run = runs.get(run_id)
        built_from = signature([SNAPSHOT_VERSION, current_recipe_cache()["versions"],
                                list(run.stamps) if run is not None else None,
                                [[path.name, file_stamp(path)] for path in paths]])
        part, index_path = layout.similarity_part_path(run_id), layout.similarity_index_path(run_id)
        index = current_record(index_path, built_from, part)
        if index is not None:
            total += index.get("rows", 0)
            continue
        snapshots = usable_snapshots(experiment, run_id, listed_checkpoints(run))
        settings = settings_columns(run, experiment.similarity_path) if snapshots else None
        frame = similarity_rows(snapshots) if settings is not None else None
        if frame is not None:
            frame.insert(0, "run_id", run_id)
            for name, (value, _) in settings.items():
                frame[name] = value
            atomic_write_bytes(part, frame.to_parquet(index=False))
        else:
            part.unlink(missing_ok=True)
        rows = 0 if frame is None else len(frame)
        atomic_write_json(index_path, {"built_from": built_from, "output": file_stamp(part), "rows": rows})
        total += rows
    return total
