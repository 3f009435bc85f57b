"""Plasticity (Berariu et al. 2021): warm start vs scratch vs reset-k, and the warm-start gap vs depth and width.

A warm-started run's curve is its earlier stages' checkpoints followed by its own, on an axis of
epochs since the switch to all the data (earlier stages at negative epochs, as in the paper's Fig. 11;
growing data's n + 1 stages all drawn). Every setting besides the pretraining protocol and the seed
is held fixed within a panel (style.condition_groups): one panel per condition, its title says which.
"""

from __future__ import annotations


import pandas as pd
import seaborn

from conf.plasticity import PLASTICITY_FIELDS
from figures.registry import Skip, figure
from findings.plasticity import protocol, scratch_twin  # the table's reading: one owner
from findings.conditions import children
from figures.style import (SEED_BAND, SETTINGS, legend_outside, native_scale, new_figure, panel_grid,
                           condition_groups, shared, titled, transferred, varying,
                           x_labelled)

SHAPE = ("depth", "width", "arch")  # the network's size: the appendix's ResNet-18 family

NAMED = ("reset_last", "shrink", "perturb", "stages")  # what protocol() spells out in words
SWITCH_LABEL = "epochs since the switch to all data (earlier stages < 0)"


def accuracy_curves(metrics: pd.DataFrame) -> pd.DataFrame:
    """Classifier test accuracy per checkpoint of every scratch run and every child (its earlier stages'
    checkpoints prepended), with `epochs since switch`."""
    return switch_curves(metrics, metrics[(metrics["metric"] == "classifier_accuracy") & (metrics["split"] == "test")])


def switch_curves(metrics: pd.DataFrame, accuracy: pd.DataFrame) -> pd.DataFrame:
    """The chosen rows (`accuracy`: one value per run and checkpoint) of every scratch run and every
    warm-started child, the rows of its earlier stages prepended (a chain of growing-data stages: all of
    them) under the child's run id and settings (they are the start of its curve, and of its condition), with
    `epochs since switch` (to all the data: the last stage). Transfer children and their siblings (the
    children of a parent that has one: figures/transfer.py draws them) are left out: their parents learnt
    another task, stopped early, or trained for the transfer story's condition."""
    transfer_parents = set(accuracy.loc[transferred(accuracy), "parent_run_id"])
    some_child = children(accuracy).any()
    accuracy = accuracy[~transferred(accuracy) & ~accuracy["parent_run_id"].isin(transfer_parents)]
    if not children(accuracy).any():
        raise Skip("every warm-started run is a transfer child or a sibling of one (the transfer figure draws them)"
                   if some_child else "no warm-started runs (pretrain_fraction > 0) in this experiment")
    parts = []
    for run, rows in accuracy.groupby("run_id"):
        first = rows.iloc[0]
        if first["pretrain_fraction"] > 0 and first["epochs"] == 0:
            continue  # an earlier stage: drawn as the start of each of its children
        rows = rows.copy()
        stages = int(first["stages"])
        switch = first["pretrain_epochs"] * stages if first["pretrain_fraction"] > 0 else 0.0  # the last stage's start
        rows["epochs since switch"] = rows["epoch"] - switch
        own = {key: first[key] for key in SETTINGS}
        parent_id, earlier = first["parent_run_id"], []
        while first["pretrain_fraction"] > 0 and parent_id:  # same network and seed
            parent = accuracy[accuracy["run_id"] == parent_id]
            # a hair before each switch: the parent's last checkpoint is the net before the intervention,
            # the child's first the net after it, at the same iteration; apart, the line shows the jump
            earlier.append(parent.assign(run_id=run, **own, **{"epochs since switch": parent["epoch"] - switch - 1e-3}))
            parent_id = parent["parent_run_id"].iloc[0] if len(parent) else ""
        parts.append(pd.concat([*earlier[::-1], rows]))
    if not parts:
        raise Skip("no scratch or warm-started runs with measured checkpoints")
    return pd.concat(parts, ignore_index=True)


def protocol_groups(curves: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """[(what the group holds fixed, its curves with `protocol`)]: one group per condition of the network, data
    and training (every setting but the pretraining ones and the seed: condition_groups), each with warm-started
    runs (a scratch-only condition belongs to other stories). Full-data and subset runs, or two widths, are two
    groups, never one "scratch" and one "warm start" line (Berariu et al. compare a warm start with its own
    from-scratch twin)."""
    groups = [(fixed, part) for fixed, part in condition_groups(curves, plotted=PLASTICITY_FIELDS)
              if (part["pretrain_fraction"] > 0).any()]
    if not groups:
        raise Skip("no warm-started runs (pretrain_fraction > 0) in this experiment")
    labelled = []
    for fixed, part in groups:
        extra = varying(part[part["pretrain_fraction"] > 0], PLASTICITY_FIELDS, exclude=NAMED)
        runs = part.drop_duplicates("run_id").set_index("run_id")
        names = {run: protocol(row, extra) for run, row in runs.iterrows()}
        labelled.append((fixed, part.assign(protocol=part["run_id"].map(names))))
    return labelled


def protocol_colours(groups) -> dict:
    """Colour each protocol alike in every panel (seaborn's own order is each panel's order of appearance, so
    one protocol would change colour from one condition to the next), keyed by name: a `palette`."""
    names = sorted({name for _, part in groups for name in part["protocol"].unique()})
    return dict(zip(names, seaborn.color_palette(n_colors=len(names))))


def present(palette: dict, part: pd.DataFrame) -> list[str]:
    """The protocols of `palette` that `part` draws, in the palette's order: a panel's `hue_order`."""
    return [name for name in palette if name in set(part["protocol"])]


@figure("plasticity_curves", "Berariu et al. 2021, Fig. 6 and 11")
def plasticity_curves(metrics: pd.DataFrame) -> dict:
    """Test accuracy vs epochs since the switch to all data, one line per protocol, one panel per condition."""
    groups = protocol_groups(accuracy_curves(metrics))
    drawing, axes = panel_grid(len(groups), width=5.0)
    shared(axes, x=True, y=True)  # conditions side by side: one accuracy range, one epochs axis
    palette = protocol_colours(groups)
    for axis, (fixed, part) in zip(axes, groups):
        seaborn.lineplot(part, x="epochs since switch", y="value", hue="protocol", errorbar=SEED_BAND, marker="o",
                         markersize=3, palette=palette, hue_order=present(palette, part), ax=axis)
        axis.axvline(0, color="black", lw=0.8)
        x_labelled(axis, SWITCH_LABEL)
        axis.set_ylabel("test accuracy (fraction)")  # fitted to the data: a gap of one point stays visible
        titled(axis, fixed, 8)
        legend_outside(axis, title="protocol")
    titled(drawing, "Warm start vs scratch (Berariu et al. 2021); each panel one condition", 10)
    return {"plasticity_curves": drawing}


def final_accuracy(curves: pd.DataFrame) -> pd.DataFrame:
    last = curves.groupby("run_id")["iteration"].transform("max")
    return curves[curves["iteration"] == last]


def gap_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per plain warm start (no reset, shrink or perturb) that has its from-scratch twin: the child's
    settings and `gap`, the twin's final test accuracy minus the child's."""
    final = final_accuracy(accuracy_curves(metrics))
    accuracy = final.groupby("run_id")["value"].first()
    children = final.drop_duplicates("run_id")
    warm = children[children.apply(protocol, axis=1) == "warm start"]
    pairs = [{**{key: row[key] for key in SETTINGS if key in row}, "gap": accuracy[twin] - row["value"]}
             for _, row in warm.iterrows() if (twin := scratch_twin(row)) in accuracy.index]
    if not pairs:
        raise Skip("no plain warm start (no reset, shrink or perturb) with its from-scratch twin in the table")
    return pd.DataFrame(pairs)


@figure("warm_start_gap", "Berariu et al. 2021, Fig. 6 (depth and width)")
def warm_start_gap(metrics: pd.DataFrame) -> dict:
    """The warm-start gap vs depth and vs width (whichever vary), one row of panels per condition of the rest."""
    gap = gap_table(metrics)
    knobs = varying(gap, SHAPE) or [next(key for key in SHAPE if gap[key].notna().all())]  # arch: no depth (torchvision)
    groups = condition_groups(gap, plotted=SHAPE)
    drawing, axes = new_figure(len(knobs), len(groups))
    shared(axes, y=True)  # one gap range for every condition and knob (x: a knob's values, not shared)
    for row, (fixed, part) in enumerate(groups):
        for column, knob in enumerate(knobs):
            axis = axes[row * len(knobs) + column]
            other = [key for key in SHAPE if key != knob and part[key].nunique() > 1]
            seaborn.pointplot(part, x=knob, y="gap", hue=other[0] if other else None, errorbar=SEED_BAND, ax=axis,
                              native_scale=native_scale(part, knob))  # one depth: one tick, not 2.85 .. 3.15
            axis.axhline(0, color="black", lw=0.8)
            axis.set_ylabel("final test accuracy:\nscratch − warm start")  # on one line: taller than a short panel
            titled(axis, f"warm-start gap vs {knob}" + (f"\n{fixed}" if len(groups) > 1 else ""), 8)
            if axis.get_legend():
                legend_outside(axis, title=axis.get_legend().get_title().get_text())
    held = "" if len(groups) > 1 else f"\n{groups[0][0]}"
    titled(drawing, f"Warm-start gap (> 0: warm start generalises worse){held}", 9)
    return {"warm_start_gap": drawing}
