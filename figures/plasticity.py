"""Plasticity (Berariu et al. 2021): warm start vs scratch vs reset-k, and the warm-start gap vs depth and width.

A warm-started run's curve is its earlier stages' checkpoints followed by its own, on an axis of
epochs since the switch to all the data (earlier stages at negative epochs, as in the paper's Fig. 11;
growing data's n + 1 stages all drawn).
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import seaborn

from conf import Settings
from conf.plasticity import PRETRAINING_DEFAULTS
from figures.registry import Skip, figure
from figures.style import SEED_BAND, new_figure, staged, transferred, varying

SHAPE = ("depth", "width", "arch")  # the network's size: the appendix's ResNet-18 family


def protocol(row: pd.Series) -> str:
    """scratch, warm start (or growing data over n + 1 stages), + reset last k, or shrink-and-perturb."""
    if row["pretrain_fraction"] == 0:
        return "scratch"
    stages = int(row["stages"]) if "stages" in row else 1
    parts = ["warm start" if stages == 1 else f"growing data, {stages + 1} stages"]
    if row["reset_last"]:
        parts.append(f"reset last {int(row['reset_last'])}")
    if row["shrink"] != 1 or row["perturb"] != 0:
        parts.append(f"shrink {row['shrink']:g}, perturb {row['perturb']:g}")
    return ", ".join(parts)


def accuracy_curves(metrics: pd.DataFrame) -> pd.DataFrame:
    """Classifier test accuracy per checkpoint of every scratch run and every child (its earlier stages'
    checkpoints prepended), with `protocol` and `epochs since switch`."""
    return switch_curves(metrics, metrics[(metrics["metric"] == "classifier_accuracy") & (metrics["split"] == "test")])


def switch_curves(metrics: pd.DataFrame, accuracy: pd.DataFrame) -> pd.DataFrame:
    """The chosen rows (`accuracy`: one value per run and checkpoint) of every scratch run and every
    warm-started child, the rows of its earlier stages prepended (a chain of growing-data stages: all of
    them), with `protocol` and `epochs since switch` (to all the data: the last stage). Transfer children
    (figures/transfer.py) are left out: their parents learnt another task, or stopped early."""
    accuracy = accuracy[~transferred(accuracy)]
    if not (staged(accuracy) & (accuracy["epochs"] > 0)).any():
        raise Skip("no warm-started runs (pretrain_fraction > 0) in this experiment")
    parts = []
    for run, rows in accuracy.groupby("run_id"):
        first = rows.iloc[0]
        if first["pretrain_fraction"] > 0 and first["epochs"] == 0:
            continue  # an earlier stage: drawn as the start of each of its children
        rows = rows.copy()
        stages = int(first["stages"]) if "stages" in first else 1
        switch = first["pretrain_epochs"] * stages if first["pretrain_fraction"] > 0 else 0.0  # the last stage's start
        rows["epochs since switch"] = rows["epoch"] - switch
        parent_id, earlier = first["parent_run_id"], []
        while first["pretrain_fraction"] > 0 and parent_id:  # same network and seed
            parent = accuracy[accuracy["run_id"] == parent_id]
            # a hair before each switch: the parent's last checkpoint is the net before the intervention,
            # the child's first the net after it, at the same iteration; apart, the line shows the jump
            earlier.append(parent.assign(run_id=run, **{"epochs since switch": parent["epoch"] - switch - 1e-3}))
            parent_id = parent["parent_run_id"].iloc[0] if len(parent) else ""
        rows = pd.concat([*earlier[::-1], rows])
        rows["protocol"] = protocol(first)
        parts.append(rows)
    if not parts:
        raise Skip("no scratch or warm-started runs with measured checkpoints")
    return pd.concat(parts, ignore_index=True)


def shape_groups(curves: pd.DataFrame) -> tuple[list[str], list]:
    """(the shape settings that vary, [(their values, rows)]) over the networks that have warm-started runs:
    scratch-only networks belong to other stories."""
    shapes = varying(curves, SHAPE)
    if shapes:
        warm = curves[curves["protocol"] != "scratch"][shapes].drop_duplicates()
        curves = curves.merge(warm, on=shapes)
        shapes = varying(curves, SHAPE)
    return shapes, list(curves.groupby(shapes, sort=True)) if shapes else [((), curves)]


def shape_title(shapes: list[str], key) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{name}={value}" for name, value in zip(shapes, key))


@figure("plasticity_curves", "Berariu et al. 2021, Fig. 6 and 11")
def plasticity_curves(metrics: pd.DataFrame) -> dict:
    shapes, groups = shape_groups(accuracy_curves(metrics))
    drawing, axes = new_figure(len(groups), width=5.0)
    for axis, (key, part) in zip(axes, groups):
        seaborn.lineplot(part, x="epochs since switch", y="value", hue="protocol", errorbar=SEED_BAND, marker="o",
                         markersize=3, ax=axis)
        axis.axvline(0, color="black", lw=0.8)
        axis.set_xlabel("epochs since the switch to all data (earlier stages < 0)")
        axis.set_ylabel("test accuracy (fraction)")
        axis.set_title(shape_title(shapes, key) or "all runs")
        axis.legend(fontsize=7)
    drawing.suptitle("Warm start vs scratch (Berariu et al. 2021)", fontsize=10)
    return {"plasticity_curves": drawing}


def final_accuracy(curves: pd.DataFrame) -> pd.DataFrame:
    last = curves.groupby("run_id")["iteration"].transform("max")
    return curves[curves["iteration"] == last]


def scratch_twin(row: pd.Series) -> str:
    """The run id of a child's from-scratch twin: its settings with no pretraining (conf/plasticity.py)."""
    record = {item.name: row[item.name] for item in dataclasses.fields(Settings) if item.name in row}
    # the table holds list settings as JSON text (metrics/store.py), numbers as numpy scalars
    settings = Settings.from_record({key: json.loads(value) if isinstance(value, str) and value.startswith("[")
                                     else value.item() if hasattr(value, "item") else value
                                     for key, value in record.items()})
    return dataclasses.replace(settings, pretrain_fraction=0.0, **PRETRAINING_DEFAULTS).run_id


@figure("warm_start_gap", "Berariu et al. 2021, Fig. 6 (depth and width)")
def warm_start_gap(metrics: pd.DataFrame) -> dict:
    final = final_accuracy(accuracy_curves(metrics))
    accuracy = final.groupby("run_id")["value"].first()
    warm = final[final["protocol"] == "warm start"].drop_duplicates("run_id")
    pairs = [{"depth": row["depth"], "width": row["width"], "seed": row["seed"],
              "gap": accuracy[twin] - row["value"]}
             for _, row in warm.iterrows() if (twin := scratch_twin(row)) in accuracy.index]
    if not pairs:
        raise Skip("no plain warm start (no reset, shrink or perturb) with its from-scratch twin in the table")
    gap = pd.DataFrame(pairs)
    knobs = varying(gap, ("depth", "width")) or ["depth"]
    drawing, axes = new_figure(len(knobs))
    for axis, knob in zip(axes, knobs):
        other = [key for key in ("depth", "width") if key != knob and gap[key].nunique() > 1]
        seaborn.pointplot(gap, x=knob, y="gap", hue=other[0] if other else None, errorbar=SEED_BAND, ax=axis,
                          native_scale=True)
        axis.axhline(0, color="black", lw=0.8)
        axis.set_ylabel("final test accuracy: scratch − warm start")
        axis.set_title(f"warm-start gap vs {knob}")
    drawing.suptitle("Warm-start gap (> 0: warm start generalises worse)", fontsize=10)
    return {"warm_start_gap": drawing}
