"""The learning phases (Schneider & Prabhushankar, LearnPhase, AAAI 2024): per condition, reconstruction
loss, transfer-probe accuracy and classifier accuracy vs iteration, one line per layer, with the
phases of the last hidden layer shaded (figures/phases.py) and its "stop pre-training here" marked.
"""

from __future__ import annotations

import pandas as pd
import seaborn

from figures.registry import Skip, figure
from figures.collapse import KNOBS, condition_label, single_stage
from figures.phases import phase_table, stop_table
from figures.style import SEED_BAND, iteration_axis, legend_outside, new_figure, varying

PHASE_COLOURS = ("#bbbbbb", "#8fd18f", "#f4a582")  # (i) flat, (ii) falling, (iii) rising
PANELS = (("reconstruction_mse", "test", "reconstruction MSE, test (normalised pixel²)"),
          ("transfer_accuracy", "test", "colour-dominance probe accuracy, test"))


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
    rows = single_stage(metrics)
    if rows[rows["metric"] == "reconstruction_mse"].empty:
        raise Skip("no reconstruction rows from single-stage runs in the table")
    advice = stop_table(phase_table(rows))
    keys = varying(rows, KNOBS)
    drawings = {}
    conditions = rows.groupby(keys, sort=True) if keys else [((), rows)]
    for index, (values, part) in enumerate(conditions):
        runs = part["run_id"].unique()
        run_advice = advice[advice["run_id"].isin(runs)]
        drawing, axes = new_figure(3, width=5.4)  # room for each panel's legend at its right
        for axis, (metric, split, label) in zip(axes, PANELS):
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
        drawing.suptitle(f"Learning phases — {condition_label(part.iloc[0], keys)}; shaded: flat, falling, rising "
                         f"reconstruction loss of the last hidden layer", fontsize=9)
        values = values if isinstance(values, tuple) else (values,)
        slug = "_".join(f"{key}{value}" for key, value in zip(keys, values)) if keys else "all"
        drawings[f"learning_phases_{index:02d}_{slug}"] = drawing
    return drawings
