"""Intermediate neural collapse (Galanti et al., TMLR 2023; IntermediateNC): NCC accuracy and CDNV by layer.

Figures: NCC train accuracy vs layer at the end of training, one line per depth, one panel per condition
(their Fig. 1); the same for CDNV; effective depth vs each knob that varies (label noise, weight decay,
depth, width, lr), one line per family of runs that differ in that knob only; layer x iteration
heatmaps of NCC accuracy and CDNV per run. Only single-stage runs: staged ones have their own figures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn
from matplotlib.ticker import MaxNLocator

from figures.registry import Skip, figure
from figures.style import (SEED_BAND, heatmap, grouping_keys, legend_outside, native_scale, new_figure, panel_grid,
                           condition_groups, setting_words, shared, staged, titled, varying)

KNOBS = ("label_noise", "weight_decay", "depth", "width", "lr", "arch")  # what IntermediateNC varies
HIDDEN = ("input", "logits")  # not hidden layers: their NCC accuracy is the data's and the classifier's


def single_stage(metrics: pd.DataFrame) -> pd.DataFrame:
    """Runs trained in one stage: warm-started and transfer runs and their earlier stages have their own
    figures (figures/plasticity.py, figures/transfer.py) and would mix two protocols into one line here."""
    return metrics[~staged(metrics)]


def final_rows(metrics: pd.DataFrame, metric: str, split: str = "train") -> pd.DataFrame:
    """One metric at each single-stage run's last measured checkpoint."""
    every = metrics[(metrics["metric"] == metric) & (metrics["split"] == split)]
    chosen = single_stage(every)
    if chosen.empty:  # the filter's own reason: a transfer experiment's table holds thousands of staged rows
        raise Skip(f"every {metric} ({split}) row is of a staged run (warm start, transfer: their own figures); "
                   "this figure compares runs trained in one stage" if len(every) else f"no {metric} ({split}) rows in the table")
    last = chosen.groupby("run_id")["iteration"].transform("max")
    return chosen[chosen["iteration"] == last]


def hidden_layers(rows: pd.DataFrame) -> pd.DataFrame:
    """Hidden layers numbered 1..L from the input side (the x axis of IntermediateNC's Fig. 1)."""
    rows = rows[~rows["layer"].isin(HIDDEN)].copy()
    rows["hidden layer"] = rows.groupby("run_id")["layer_index"].rank(method="dense").astype(int)
    return rows


def _by_layer(metrics: pd.DataFrame, metric: str, label: str, log: bool):
    """One panel per condition (every setting but depth and seed held fixed, its title says which), one line per
    depth: IntermediateNC's Fig. 1 compares depths of one condition, never a depth of another width or optimizer."""
    rows = hidden_layers(final_rows(metrics, metric))
    groups = condition_groups(rows, plotted=("depth",))
    drawing, axes = panel_grid(len(groups))
    shared(axes, x=True, y=True)  # conditions side by side: one layer axis, one value range
    for axis, (fixed, part) in zip(axes, groups):
        sized = part["depth"].notna().any()  # a torchvision builder's condition has no depth (null): one line, no legend
        seaborn.lineplot(part, x="hidden layer", y="value", hue="depth" if sized else None, marker="o",
                         errorbar=SEED_BAND, palette="viridis" if sized else None, legend="full", ax=axis)
        axis.set_ylabel(label)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if sized:
            legend_outside(axis, title="depth")
        if len(groups) > 1:  # one panel: the suptitle says it all
            titled(axis, fixed, 8)
        if log:
            axis.set_yscale("log")
    held = "" if len(groups) > 1 else f"\n{fixed}"
    titled(drawing, f"{label} by layer, end of training{held}", 10 if len(groups) > 1 else 9)
    return drawing


@figure("ncc_by_layer", "IntermediateNC Fig. 1")
def ncc_by_layer(metrics: pd.DataFrame) -> dict:
    return {"ncc_by_layer": _by_layer(metrics, "ncc_accuracy", "NCC train accuracy (fraction)", log=False)}


@figure("cdnv_by_layer", "IntermediateNC (CDNV, Galanti et al.)")
def cdnv_by_layer(metrics: pd.DataFrame) -> dict:
    return {"cdnv_by_layer": _by_layer(metrics, "cdnv", "CDNV, train (unitless; log scale)", log=True)}


def controlled(rows: pd.DataFrame, knob: str) -> pd.DataFrame:
    """The rows of runs that differ in `knob` only (seeds aside), each such family labelled in `condition` by
    what it holds fixed (among the families kept): an effect read off one knob is not confounded by others."""
    families = [part for _, part in condition_groups(rows, plotted=(knob,)) if part[knob].nunique() > 1]
    if not families:
        return rows.iloc[0:0]
    kept = pd.concat(families, ignore_index=True)
    return pd.concat([part.assign(condition=fixed) for fixed, part in condition_groups(kept, plotted=(knob,))],
                     ignore_index=True)


def collapsed_rows(metrics: pd.DataFrame, readout) -> tuple[pd.DataFrame, list[str]]:
    """The paper's effective depth (effective_depth_literal) of each single-stage run whose condition collapses at an
    intermediate layer in every seed, at the checkpoint the read-out reads it (findings/depth.py); and the
    conditions left out, with their verdict (no intermediate collapse, not every seed)."""
    from findings.rows import INTERMEDIATE

    depth = readout.table[readout.table["question"] == "effective_depth"]
    if depth.empty:
        raise Skip("no effective_depth_literal rows of runs trained from their own start (metrics= leaves it out, "
                   "or every run is a child)")
    kept = depth[depth["verdict"] == INTERMEDIATE]
    at = {run: row["checkpoint"] for _, row in kept.iterrows() for run in row["runs"].split()}
    rows = single_stage(metrics[metrics["metric"] == "effective_depth_literal"])
    rows = rows[rows["run_id"].map(at).eq(rows["iteration"])]
    return rows, [f"{row['condition']}: {row['verdict']}" for _, row in depth[depth["verdict"] != INTERMEDIATE].iterrows()]


@figure("effective_depth", "IntermediateNC (effective depth)", readout=True)
def effective_depth(metrics: pd.DataFrame, readout) -> dict:
    """The paper's ε-effective depth vs each knob, of the conditions that collapse at an intermediate layer in
    every seed, at the read-out's checkpoint: at the output layer, or where no layer reaches ε, there is no
    depth to draw (the report's findings say which). A categorical knob gets points, no line between them."""
    rows, left_out = collapsed_rows(metrics, readout)
    if rows.empty:
        raise Skip("no condition collapses at an intermediate layer in every seed (" + "; ".join(left_out) + ")")
    panels = [(knob, controlled(rows, knob)) for knob in varying(rows, KNOBS)]
    panels = [(knob, part) for knob, part in panels if len(part)]
    if not panels:
        raise Skip("no two conditions that collapse at an intermediate layer differ in one of " + ", ".join(KNOBS) + " only")
    drawing, axes = new_figure(len(panels))
    shared(axes, y=True)  # one effective-depth range across the knobs (x: a different knob per panel)
    for axis, (knob, part) in zip(axes, panels):
        numeric = pd.api.types.is_numeric_dtype(part[knob]) and not pd.api.types.is_bool_dtype(part[knob])
        seaborn.pointplot(part, x=knob, y="value", hue="condition", errorbar=SEED_BAND, ax=axis,
                          native_scale=native_scale(part, knob), linestyle="-" if numeric else "none",
                          dodge=0.1 if part["condition"].nunique() > 1 else False)
        axis.set_ylabel("effective depth (layer index)")
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        titled(axis, f"effective depth vs {knob}" + ("" if numeric else " (categories: no line)"), 10)
        legend_outside(axis, title="held fixed")
    dropped = f"\nleft out: {'; '.join(left_out)}" if left_out else ""
    titled(drawing, "Effective depth (the paper's: first layer with NCC train error ≤ ε)" + dropped, 10)
    return {"effective_depth": drawing}


def condition_label(row: pd.Series, keys: list[str]) -> str:
    return setting_words(row, keys) or "all runs"


def heatmap_rows(metrics: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(the NCC and CDNV train rows of each condition's first seed among the runs that trained from their own start,
    the keys that tell those runs apart); Skip when there are none."""
    every = metrics[metrics["metric"].isin(["ncc_accuracy", "cdnv"]) & (metrics["split"] == "train")]
    rows = every[every["parent_run_id"].fillna("") == ""]
    if rows.empty:
        raise Skip("every NCC and CDNV row is of a child run (it continues its parent's curve)" if len(every)
                   else "no NCC or CDNV rows in the table")
    keys = grouping_keys(rows)
    first_seeds = [group[group["seed"] == group["seed"].min()] for _, group in condition_groups(rows)]
    return pd.concat(first_seeds), keys


def heatmap_runs(metrics: pd.DataFrame) -> list[str]:
    """The runs collapse_heatmaps draws, a figure each (drawn on their own: FigureSpec.parts)."""
    return sorted(heatmap_rows(metrics)[0]["run_id"].unique())


@figure("collapse_heatmaps", "IntermediateNC (NCC and CDNV over training)", parts=heatmap_runs)
def collapse_heatmaps(metrics: pd.DataFrame, part: str | None = None) -> dict:
    """One figure per run of each condition's first seed (a run is one condition: nothing pooled): NCC train accuracy and
    log10 CDNV, layer x iteration, titled with the settings that tell it from the other runs (`part`: that run's
    only). Runs that trained from their own start only: a child's curve continues its parent's, and a transfer
    child is measured at its two ends by default (child_checkpoints=ends), no course over training to draw."""
    rows, keys = heatmap_rows(metrics)
    drawings = {}
    for index, (run, run_rows) in enumerate(rows.groupby("run_id", sort=True)):
        if part is not None and run != part:
            continue
        drawing, axes = new_figure(2, width=5.2)
        for axis, (metric, label) in zip(axes, (("ncc_accuracy", "NCC train accuracy"), ("cdnv", "log10 CDNV (train)"))):
            grid = run_rows[run_rows["metric"] == metric].pivot_table(index="layer", columns="iteration", values="value")
            grid = grid.reindex(run_rows.sort_values("layer_index")["layer"].unique())
            if metric == "cdnv":
                grid = np.log10(grid.where(grid > 0))
            heatmap(axis, grid, "viridis" if metric == "ncc_accuracy" else "magma_r", label)
            axis.set_xlabel("training iteration (checkpoints, log-spaced)")
            axis.set_ylabel("layer (input at the top)")
        titled(drawing, f"{condition_label(run_rows.iloc[0], keys)} — {run}", 9)
        drawings[f"heatmap_{index:02d}_{run}"] = drawing
    return drawings
