"""Representation similarity (linear CKA, Kornblith et al., ICML 2019), drawn from similarity.parquet.

Figures: layer × layer CKA at the end of training; layer × checkpoint CKA with the layer's own final state
("convergence to final": lower layers settle first, if they do — Raghu et al., NeurIPS 2017's bottom-up
convergence). One panel per condition of the single-stage runs (the settings that vary, seeds averaged).
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import seaborn

from conf import Settings
from figures.collapse import KNOBS, single_stage
from figures.registry import Skip, figure
from figures.style import new_figure, varying

KORNBLITH = "Kornblith, Norouzi, Lee & Hinton, ICML 2019"
MAX_PANELS = 6  # conditions drawn per figure (the first ones, sorted); the rest are in similarity.parquet
PANELS_PER_ROW = 3
NOT_CONDITIONS = ("seed", "data_seed")  # averaged over, never a panel of their own
HEATMAP = {"vmin": 0.0, "vmax": 1.0, "cmap": "viridis", "square": False, "cbar_kws": {"label": "linear CKA"}}


def conditions(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per combination of the knobs that vary (seeds averaged later), the first MAX_PANELS. The
    label names the knobs the papers vary (KNOBS, then the optimizer), the rest tells runs apart by arch."""
    keys = varying(rows, [field.name for field in dataclasses.fields(Settings)], exclude=NOT_CONDITIONS)
    if not keys:
        return [("", rows)]
    shown = [key for key in (*KNOBS, "optimizer") if key in keys] or keys[:2]
    groups = list(rows.groupby(keys, sort=True, dropna=False))[:MAX_PANELS]
    return [(", ".join(f"{key}={part[key].iloc[0]}" for key in shown), part) for _, part in groups]


def layer_order(rows: pd.DataFrame) -> list[str]:
    return list(rows.sort_values("layer_index")["layer"].drop_duplicates())


def require_similarity(similarity: pd.DataFrame, kind: str) -> pd.DataFrame:
    rows = single_stage(similarity)
    rows = rows[rows["kind"] == kind] if len(rows) else rows
    if rows.empty:
        raise Skip("no probe snapshots measured (cka_previous_layer in metrics=, probe_subset_size > 0)")
    return rows


def heatmaps(panels, pivot, title: str, xlabel: str, ylabel: str):
    columns = min(len(panels), PANELS_PER_ROW)
    drawing, axes = new_figure(columns, -(-len(panels) // columns), width=4.2, height=3.6)
    for axis, (label, part) in zip(axes, panels):
        seaborn.heatmap(pivot(part), ax=axis, **HEATMAP)
        axis.set_title(label, fontsize=8)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.tick_params(axis="x", labelrotation=90, labelsize=7)
        axis.tick_params(axis="y", labelrotation=0, labelsize=7)
    for axis in axes[len(panels):]:
        axis.set_visible(False)
    drawing.suptitle(title, fontsize=10)
    return drawing


@figure("cka_layers", f"{KORNBLITH} (linear CKA between layers)", table="similarity")
def cka_layers(similarity: pd.DataFrame) -> dict:
    """Linear CKA of every pair of layers at each run's last snapshot, on the probe subset (seeds averaged)."""
    rows = require_similarity(similarity, "layers")
    rows = rows[rows["iteration"] == rows.groupby("run_id")["iteration"].transform("max")]

    def pivot(part):
        order = layer_order(part)
        table = part.pivot_table(index="layer", columns="other_layer", values="cka", aggfunc="mean")
        return table.reindex(index=order, columns=order)

    title = "CKA between layers, end of training\n(probe subset of the test split)"
    return {"cka_layers": heatmaps(conditions(rows), pivot, title, "layer", "layer")}


@figure("cka_convergence", f"{KORNBLITH}; bottom-up convergence as Raghu et al., NeurIPS 2017",
        table="similarity")
def cka_convergence(similarity: pd.DataFrame) -> dict:
    """Linear CKA of each layer at each checkpoint with the same layer at the run's last snapshot."""
    rows = require_similarity(similarity, "to_final")
    rows = rows[rows["layer"] != "input"]  # the input never changes: its row would be 1 throughout

    def pivot(part):
        table = part.pivot_table(index="layer", columns="iteration", values="cka", aggfunc="mean")
        return table.reindex(index=layer_order(part))

    title = "CKA of each layer with its own final state\n(lower layers settle first, if they do)"
    return {"cka_convergence": heatmaps(conditions(rows), pivot, title, "training iteration (checkpoints)", "layer")}
