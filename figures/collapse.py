"""Intermediate neural collapse (Galanti et al., TMLR 2023; IntermediateNC): NCC accuracy and CDNV by layer.

Figures: NCC train accuracy vs layer at the end of training, one line per depth (their Fig. 1);
the same for CDNV; effective depth vs each knob that varies (label noise, weight decay, depth,
width, lr); layer x iteration heatmaps of NCC accuracy and CDNV per condition.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import seaborn
from matplotlib.ticker import MaxNLocator

from conf import Settings
from figures.registry import Skip, figure
from figures.style import SEED_BAND, new_figure, staged, varying

KNOBS = ("label_noise", "weight_decay", "depth", "width", "lr", "arch")  # what IntermediateNC varies
HIDDEN = ("input", "logits")  # not hidden layers: their NCC accuracy is the data's and the classifier's


def single_stage(metrics: pd.DataFrame) -> pd.DataFrame:
    """Runs trained in one stage: warm-started and transfer runs and their earlier stages have their own
    figures (figures/plasticity.py, figures/transfer.py) and would mix two protocols into one line here."""
    return metrics[~staged(metrics)]


def final_rows(metrics: pd.DataFrame, metric: str, split: str = "train") -> pd.DataFrame:
    """One metric at each single-stage run's last measured checkpoint."""
    metrics = single_stage(metrics)
    chosen = metrics[(metrics["metric"] == metric) & (metrics["split"] == split)]
    if chosen.empty:
        raise Skip(f"no {metric} ({split}) rows in the table")
    last = chosen.groupby("run_id")["iteration"].transform("max")
    return chosen[chosen["iteration"] == last]


def hidden_layers(rows: pd.DataFrame) -> pd.DataFrame:
    """Hidden layers numbered 1..L from the input side (the x axis of IntermediateNC's Fig. 1)."""
    rows = rows[~rows["layer"].isin(HIDDEN)].copy()
    rows["hidden layer"] = rows.groupby("run_id")["layer_index"].rank(method="dense").astype(int)
    return rows


def _by_layer(metrics: pd.DataFrame, metric: str, label: str, log: bool):
    rows = hidden_layers(final_rows(metrics, metric))
    facets = [key for key in varying(rows, KNOBS) if key != "depth"][:1]
    columns = sorted(rows[facets[0]].unique()) if facets else [None]
    drawing, axes = new_figure(len(columns))
    for axis, value in zip(axes, columns):
        part = rows if value is None else rows[rows[facets[0]] == value]
        seaborn.lineplot(part, x="hidden layer", y="value", hue="depth", marker="o", errorbar=SEED_BAND,
                         palette="viridis", ax=axis)
        axis.set_ylabel(label)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        if value is not None:  # one panel: the suptitle says it all
            axis.set_title(f"{facets[0]} = {value}")
        if log:
            axis.set_yscale("log")
    drawing.suptitle(f"{label} by layer, end of training", fontsize=10)
    return drawing


@figure("ncc_by_layer", "IntermediateNC Fig. 1")
def ncc_by_layer(metrics: pd.DataFrame) -> dict:
    return {"ncc_by_layer": _by_layer(metrics, "ncc_accuracy", "NCC train accuracy (fraction)", log=False)}


@figure("cdnv_by_layer", "IntermediateNC (CDNV, Galanti et al.)")
def cdnv_by_layer(metrics: pd.DataFrame) -> dict:
    return {"cdnv_by_layer": _by_layer(metrics, "cdnv", "CDNV, train (unitless; log scale)", log=True)}


def controlled(rows: pd.DataFrame, knob: str) -> pd.DataFrame:
    """The rows of runs that differ in `knob` only (seeds aside), each such family labelled in
    `condition` by the knobs it holds fixed: an effect read off one knob is not confounded by others."""
    fixed = [item.name for item in dataclasses.fields(Settings) if item.name in rows and item.name not in (knob, "seed")]
    families = []
    for _, family in rows.groupby(fixed, dropna=False, sort=True):
        if family[knob].nunique() > 1:
            others = [key for key in varying(rows, KNOBS) if key != knob]
            families.append(family.assign(condition=condition_label(family.iloc[0], others)))
    return pd.concat(families, ignore_index=True) if families else rows.iloc[0:0]


@figure("effective_depth", "IntermediateNC (effective depth)")
def effective_depth(metrics: pd.DataFrame) -> dict:
    rows = final_rows(metrics, "effective_depth")
    panels = [(knob, controlled(rows, knob)) for knob in varying(rows, KNOBS)]
    panels = [(knob, part) for knob, part in panels if len(part)]
    if not panels:
        raise Skip("no two runs differ in one of " + ", ".join(KNOBS) + " only")
    drawing, axes = new_figure(len(panels))
    for axis, (knob, part) in zip(axes, panels):
        seaborn.pointplot(part, x=knob, y="value", hue="condition", errorbar=SEED_BAND, ax=axis,
                          native_scale=knob != "arch", dodge=0.1 if part["condition"].nunique() > 1 else False)
        axis.set_ylabel("effective depth (layer index)")
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(f"effective depth vs {knob}")
        axis.legend(fontsize=7, title="held fixed", title_fontsize=7)
    drawing.suptitle("Effective depth: first layer within ε of the last one's NCC accuracy", fontsize=10)
    return {"effective_depth": drawing}


def condition_label(row: pd.Series, keys: list[str]) -> str:
    return ", ".join(f"{key}={row[key]}" for key in keys) or "all runs"


@figure("collapse_heatmaps", "IntermediateNC (NCC and CDNV over training)")
def collapse_heatmaps(metrics: pd.DataFrame) -> dict:
    """One figure per run of the first seed: NCC train accuracy and log10 CDNV, layer x iteration."""
    rows = metrics[metrics["metric"].isin(["ncc_accuracy", "cdnv"]) & (metrics["split"] == "train")]
    if rows.empty:
        raise Skip("no NCC or CDNV rows in the table")
    rows = rows[rows["seed"] == rows["seed"].min()] if "seed" in rows else rows
    keys = varying(rows, [column for column in KNOBS + ("pretrain_fraction", "reset_last", "shrink", "perturb")])
    drawings = {}
    for index, (run, part) in enumerate(rows.groupby("run_id", sort=True)):
        drawing, axes = new_figure(2, width=5.2)
        for axis, (metric, label) in zip(axes, (("ncc_accuracy", "NCC train accuracy"), ("cdnv", "log10 CDNV (train)"))):
            grid = part[part["metric"] == metric].pivot_table(index="layer", columns="iteration", values="value")
            grid = grid.reindex(part.sort_values("layer_index")["layer"].unique())
            if metric == "cdnv":
                grid = np.log10(grid.where(grid > 0))
            seaborn.heatmap(grid, ax=axis, cmap="viridis" if metric == "ncc_accuracy" else "magma_r",
                            cbar_kws={"label": label})
            axis.set_xlabel("training iteration (checkpoints, log-spaced)")
            axis.set_ylabel("layer (input at the top)")
        drawing.suptitle(f"{condition_label(part.iloc[0], keys)} — {run}", fontsize=9)
        drawings[f"heatmap_{index:02d}_{run}"] = drawing
    return drawings
