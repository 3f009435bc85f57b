"""Representation similarity (linear CKA, Kornblith et al., ICML 2019), drawn from similarity.parquet.

Figures: layer × layer CKA at the end of training; layer × checkpoint CKA with the layer's own final state
("convergence to final": lower layers settle first, if they do — Raghu et al., NeurIPS 2017's bottom-up
convergence). One panel per condition of the single-stage runs (style.condition_groups: every setting that
varies, seeds averaged), titled with what it holds fixed; the colour range fits the data (CKA is in
[0, 1], but a fixed 0-1 range hides differences of a few points).
"""

from __future__ import annotations

import pandas as pd

from figures.collapse import single_stage
from figures.registry import Skip, figure
from figures.style import heatmap, panel_grid, condition_groups, titled

KORNBLITH = "Kornblith, Norouzi, Lee & Hinton, ICML 2019"
MAX_PANELS = 6  # conditions drawn per figure (the first ones, sorted); the rest are in similarity.parquet
PANELS_PER_ROW = 3
NOT_CONDITIONS = ("seed", "data_seed")  # averaged over, never a panel of their own
# Pooled, not Kornblith et al.'s full flattened features: the snapshots keep each layer pooled to at most
# probe_dimensions (measuring/snapshots.py), and the two can differ by tenths (0.36 pooled vs 0.66 full, input vs a
# third conv layer): the label says which.
CKA_LABEL = "linear CKA of pooled features (range: the data's)"


def conditions(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(what it holds fixed, rows) per condition (seeds and data seeds averaged later), the first MAX_PANELS."""
    return condition_groups(rows, pooled=NOT_CONDITIONS)[:MAX_PANELS]


def layer_order(rows: pd.DataFrame) -> list[str]:
    return list(rows.sort_values("layer_index")["layer"].drop_duplicates())


def require_similarity(similarity: pd.DataFrame, comparison: str) -> pd.DataFrame:
    every = similarity[similarity["comparison"] == comparison] if len(similarity) else similarity
    rows = single_stage(every) if len(every) else every
    if rows.empty:
        raise Skip(f"every {comparison} similarity row is of a staged run (warm start, transfer); this figure "
                   "compares runs trained in one stage" if len(every) else
                   "no probe snapshots measured (cka_previous_layer in metrics=, probe_subset_size > 0)")
    return rows


def heatmaps(panels, pivot, title: str, xlabel: str, ylabel: str):
    """One heatmap per (label, rows) panel, all on one colour range: the lowest to the highest CKA drawn."""
    tables = [(label, pivot(part)) for label, part in panels]
    values = pd.concat([table.stack() for _, table in tables])
    drawing, axes = panel_grid(len(tables), PANELS_PER_ROW, width=4.2, height=3.6)
    for axis, (label, table) in zip(axes, tables):
        heatmap(axis, table, "viridis", CKA_LABEL, vmin=values.min(), vmax=values.max())
        titled(axis, label if len(tables) > 1 else "", 8)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
    held = "" if len(tables) > 1 else f"\n{tables[0][0]}"
    titled(drawing, title + held, 10)
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

    title = "CKA between layers, end of training\n(pooled features of the probe subset of the test split)"
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

    title = "CKA of each layer with its own final state, pooled features\n(lower layers settle first, if they do)"
    return {"cka_convergence": heatmaps(conditions(rows), pivot, title, "training iteration (checkpoints)", "layer")}
