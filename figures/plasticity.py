"""Plasticity (Berariu et al. 2021): warm start vs scratch vs reset-k, and the warm-start gap vs depth and width.

A warm-started run's curve is its stage-1 parent's checkpoints followed by its own, on an axis of
epochs since the switch (stage 1 at negative epochs, as in the paper's Fig. 11).
"""

from __future__ import annotations

import pandas as pd
import seaborn

from figures import Skip, figure
from figures.style import SEED_BAND, new_figure, varying

SHAPE = ("depth", "width", "arch")  # the network's size: the appendix's ResNet-18 family


def protocol(row: pd.Series) -> str:
    """scratch, warm start, warm start + reset last k, or shrink-and-perturb (a child's interventions)."""
    if row["pretrain_fraction"] == 0:
        return "scratch"
    parts = ["warm start"]
    if row["reset_last"]:
        parts.append(f"reset last {int(row['reset_last'])}")
    if row["shrink"] != 1 or row["perturb"] != 0:
        parts.append(f"shrink {row['shrink']:g}, perturb {row['perturb']:g}")
    return ", ".join(parts)


def accuracy_curves(metrics: pd.DataFrame) -> pd.DataFrame:
    """Classifier test accuracy per checkpoint of every scratch run and every child (its parent's
    checkpoints prepended), with `protocol` and `epochs since switch`."""
    if "pretrain_fraction" not in metrics or not (metrics["pretrain_fraction"] > 0).any():
        raise Skip("no warm-started runs (pretrain_fraction > 0) in this experiment")
    accuracy = metrics[(metrics["metric"] == "classifier_accuracy") & (metrics["split"] == "test")]
    parts = []
    for run, rows in accuracy.groupby("run_id"):
        first = rows.iloc[0]
        if first["pretrain_fraction"] > 0 and first["epochs"] == 0:
            continue  # a stage-1 run: drawn as the start of each of its children
        rows = rows.copy()
        if first["pretrain_fraction"] > 0:
            parent = accuracy[accuracy["run_id"] == first["parent_run_id"]]  # same network and seed
            rows = pd.concat([parent.assign(run_id=run), rows])
            rows["epochs since switch"] = rows["epoch"] - first["pretrain_epochs"]
        else:
            rows["epochs since switch"] = rows["epoch"]
        rows["protocol"] = protocol(first)
        parts.append(rows)
    if not parts:
        raise Skip("no scratch or warm-started runs with measured checkpoints")
    return pd.concat(parts, ignore_index=True)


@figure("plasticity_curves", "Berariu et al. 2021, Fig. 6 and 11")
def plasticity_curves(metrics: pd.DataFrame) -> dict:
    curves = accuracy_curves(metrics)
    shapes = varying(curves, SHAPE)
    groups = list(curves.groupby(shapes, sort=True)) if shapes else [((), curves)]
    drawing, axes = new_figure(len(groups), width=5.0)
    for axis, (key, part) in zip(axes, groups):
        seaborn.lineplot(part, x="epochs since switch", y="value", hue="protocol", errorbar=SEED_BAND, marker="o",
                         markersize=3, ax=axis)
        axis.axvline(0, color="black", lw=0.8)
        axis.set_xlabel("epochs since the switch to all data (stage 1 < 0)")
        axis.set_ylabel("test accuracy (fraction)")
        key = key if isinstance(key, tuple) else (key,)
        axis.set_title(", ".join(f"{name}={value}" for name, value in zip(shapes, key)) or "all runs")
        axis.legend(fontsize=7)
    drawing.suptitle("Warm start vs scratch: test accuracy over training (Berariu et al. 2021)")
    return {"plasticity_curves": drawing}


def final_accuracy(curves: pd.DataFrame) -> pd.DataFrame:
    last = curves.groupby("run_id")["iteration"].transform("max")
    return curves[curves["iteration"] == last]


@figure("warm_start_gap", "Berariu et al. 2021, Fig. 6 (depth and width)")
def warm_start_gap(metrics: pd.DataFrame) -> dict:
    final = final_accuracy(accuracy_curves(metrics))
    keys = [key for key in SHAPE + ("seed",) if key in final]
    scratch = final[final["protocol"] == "scratch"].set_index(keys)["value"].rename("scratch")
    warm = final[final["protocol"] == "warm start"].set_index(keys)["value"].rename("warm start")
    gap = pd.concat([scratch, warm], axis=1, join="inner").dropna()
    if gap.empty:
        raise Skip("no (scratch, plain warm start) pair of the same network and seed")
    gap["gap"] = gap["scratch"] - gap["warm start"]
    gap = gap.reset_index()
    knobs = varying(gap, ("depth", "width")) or ["depth"]
    drawing, axes = new_figure(len(knobs))
    for axis, knob in zip(axes, knobs):
        other = [key for key in ("depth", "width") if key != knob and gap[key].nunique() > 1]
        seaborn.pointplot(gap, x=knob, y="gap", hue=other[0] if other else None, errorbar=SEED_BAND, ax=axis,
                          native_scale=True)
        axis.axhline(0, color="black", lw=0.8)
        axis.set_ylabel("final test accuracy: scratch − warm start")
        axis.set_title(f"warm-start gap vs {knob}")
    drawing.suptitle("The warm-start gap (positive: warm start generalises worse)")
    return {"warm_start_gap": drawing}
