"""The learning phases (Schneider & Prabhushankar, LearnPhase, AAAI 2024): per condition, reconstruction
loss, transfer-probe accuracy and classifier accuracy vs iteration, one line per layer, with the
phases of the last hidden layer shaded (figures/phases.py) and its "stop pre-training here" marked.
One figure per recipe of the single-stage runs and per transfer task (style.recipe_groups; seeds
pooled); the probe's axis names the task the table says was measured (its `transfer_task` column).
"""

from __future__ import annotations

import re

import pandas as pd
import seaborn

from figures.registry import Skip, figure
from figures.collapse import single_stage
from figures.phases import phase_table, stop_table
from figures.style import SEED_BAND, iteration_axis, legend_outside, new_figure, recipe_groups, wrapped

PHASE_COLOURS = ("#bbbbbb", "#8fd18f", "#f4a582")  # (i) flat, (ii) falling, (iii) rising
# data/transfer.py's TRANSFER_TASKS in words (figures read the table only; an unknown name is spelt out as is).
TASK_WORDS = {"colour_dominance": "colour-dominance", "colour_dominance_raw": "colour-dominance (raw pixels)",
              "brightness": "brightness", "other_dataset_classes": "other dataset's classes"}
RECONSTRUCTION = ("reconstruction_mse", "test", "reconstruction MSE, test (normalised pixel²)")


def probe_label(rows: pd.DataFrame) -> str:
    """The transfer probe's axis label, naming the task the rows measured (brightness for grayscale runs,
    colour dominance for RGB ones: data/transfer.py), or "transfer-probe" for a table that predates the column."""
    tasks = sorted(set(rows["transfer_task"].dropna())) if "transfer_task" in rows else []
    words = " / ".join(TASK_WORDS.get(task, task.replace("_", " ")) for task in tasks) or "transfer"
    return f"{words} probe accuracy, test (fraction)"


def file_slug(fixed: str) -> str:
    """"label_noise=0.2, depth=4" -> "label_noise0.2_depth4": a file stem's part without spaces or brackets, at
    most 100 characters (a file name has 255 bytes; the figure's index before it keeps the stems apart)."""
    return "_".join(re.sub(r"[^\w.\-]", "", part) for part in fixed.split(", "))[:100]


def shade_phases(axis, advice: pd.DataFrame) -> None:
    """Spans of the three phases (median boundaries over seeds) and a line at the advised stop."""
    if advice.empty or advice["minimum"].isna().all():
        return
    plateau_end, minimum = advice["plateau_end"].median(), advice["minimum"].median()
    end = axis.get_xlim()[1]
    for (left, right), colour in zip(((0, plateau_end), (plateau_end, minimum), (minimum, end)), PHASE_COLOURS):
        axis.axvspan(left, right, color=colour, alpha=0.25, lw=0)
    stop = advice["stop_pretraining_at"].median()
    if stop == stop:  # not NaN
        axis.axvline(stop, color="black", ls="--", lw=1, label="stop pre-training here")


@figure("learning_phases", "LearnPhase (AAAI 2024), their sample log and Fig. 1")
def learning_phases(metrics: pd.DataFrame) -> dict:
    """One figure per recipe (and transfer task): reconstruction loss, transfer probe and classifier accuracy."""
    rows = single_stage(metrics)
    if rows[rows["metric"] == "reconstruction_mse"].empty:
        raise Skip("no reconstruction rows from single-stage runs in the table")
    advice = stop_table(phase_table(rows))
    groups = recipe_groups(rows, also=("transfer_task",))
    drawings = {}
    for index, (fixed, part) in enumerate(groups):
        run_advice = advice[advice["run_id"].isin(part["run_id"].unique())]
        drawing, axes = new_figure(3, width=5.4)  # room for each panel's legend at its right
        panels = (RECONSTRUCTION, ("transfer_accuracy", "test", probe_label(part)))
        for axis, (metric, split, label) in zip(axes, panels):
            chosen = part[(part["metric"] == metric) & (part["split"] == split) & (part["layer"] != "input")]
            seaborn.lineplot(chosen, x="iteration", y="value", hue="layer", errorbar=SEED_BAND, palette="viridis",
                             marker="o", markersize=3, ax=axis)
            iteration_axis(axis)
            axis.set_ylabel(label)
            shade_phases(axis, run_advice)
            legend_outside(axis, title="layer")
        classifier = part[part["metric"] == "classifier_accuracy"]
        seaborn.lineplot(classifier, x="iteration", y="value", hue="split", errorbar=SEED_BAND, marker="o",
                         markersize=3, ax=axes[2])
        iteration_axis(axes[2])
        axes[2].set_ylabel("classifier accuracy (fraction)")
        shade_phases(axes[2], run_advice)
        legend_outside(axes[2], title="split")
        drawing.suptitle(wrapped(f"Learning phases — {fixed}", 120) + "\nshaded: flat, falling, rising "
                         "reconstruction loss of the last hidden layer", fontsize=9)
        slug = file_slug(fixed) if len(groups) > 1 else "all"
        drawings[f"learning_phases_{index:02d}_{slug}"] = drawing
    return drawings
