"""The learning phases (Schneider & Prabhushankar, LearnPhase, AAAI 2024): per condition, reconstruction
loss, transfer-probe accuracy and classifier accuracy vs iteration, one line per layer, with the
phases of the last hidden layer shaded and its "stop pre-training here" marked, as the read-out states
them (findings/readout.py: the seed-mean curve's turns, the numbers of the report's table). One figure
per condition of the runs that trained from their own start (a stage-1 parent included; children have no
phases: findings/conditions.py); seeds pooled as the mean with its t-interval. The reconstruction panel
shows the hidden layers (the logits' decoder error is of another scale and would flatten them; its
turns are in phases.csv); the probe's axis names the task the table says was measured.
"""

from __future__ import annotations

import pandas as pd
import seaborn

from figures.registry import Skip, figure
from figures.style import SEED_BAND, fitted, iteration_axis, legend_outside, new_figure, shared, titled
from findings.phases import stop_table

PHASE_COLOURS = ("#bbbbbb", "#8fd18f", "#f4a582")  # (i) flat, (ii) falling, (iii) rising
# data/transfer.py's TRANSFER_TASKS in words (figures read the table only; an unknown name is spelt out as is).
TASK_WORDS = {"colour_dominance": "colour-dominance", "colour_dominance_raw": "colour-dominance (raw pixels)",
              "brightness": "brightness", "other_dataset_classes": "other dataset's classes"}
RECONSTRUCTION = ("reconstruction_mse", "test", "reconstruction MSE of hidden layers, test (normalised pixel²)")


def probe_label(rows: pd.DataFrame) -> str:
    """The transfer probe's axis label, naming the task the rows measured (brightness for grayscale runs,
    colour dominance for RGB ones: data/transfer.py), or "transfer" when the rows name none."""
    tasks = sorted(set(rows["transfer_task"].dropna()))
    words = " / ".join(TASK_WORDS.get(task, task.replace("_", " ")) for task in tasks) or "transfer"
    return f"{words} probe accuracy, test (fraction)"


def shade_phases(axis, advice: pd.DataFrame) -> None:
    """Spans of the three phases of the condition's seed-mean curve and a line at its probe peak (the read-out's)."""
    if advice.empty or advice["minimum"].isna().all():
        return
    plateau_end, minimum = advice["plateau_end"].iloc[0], advice["minimum"].iloc[0]
    end = axis.get_xlim()[1]
    for (left, right), colour in zip(((0, plateau_end), (plateau_end, minimum), (minimum, end)), PHASE_COLOURS):
        axis.axvspan(left, right, color=colour, alpha=0.25, lw=0)
    stop = advice["stop_pretraining_at"].iloc[0]
    if stop == stop:  # not NaN
        axis.axvline(stop, color="black", ls="--", lw=1, label=f"probe peak ({stop:g})")


def phase_rows(metrics: pd.DataFrame, readout) -> pd.DataFrame:
    """The rows of the runs with phases (readout.labels), with their `condition`; Skip with the filter's reason."""
    if not (metrics["metric"] == "reconstruction_mse").any():
        raise Skip("no reconstruction_mse rows in the table (metrics= leaves it out, or no checkpoint is measured)")
    rows = metrics[metrics["run_id"].isin(readout.labels)]
    if not (rows["metric"] == "reconstruction_mse").any():
        raise Skip("every reconstruction_mse row is of a child run (warm-started, transfer or later stage), and a "
                   "child has no learning phases of its own")
    return rows.assign(condition=rows["run_id"].map(readout.labels))


ROWS_PER_FIGURE = 6  # conditions (rows of three panels) per figure: one file to read, a page tall at most


def figure_count(metrics: pd.DataFrame, readout) -> list[int]:
    """The learning_phases figures' indices: a figure per ROWS_PER_FIGURE conditions, each drawn on its own."""
    conditions = phase_rows(metrics, readout)["condition"].nunique()
    return list(range(-(-conditions // ROWS_PER_FIGURE)))


@figure("learning_phases", "LearnPhase (AAAI 2024), their sample log and Fig. 1", readout=True, parts=figure_count)
def learning_phases(metrics: pd.DataFrame, readout, part: int | None = None) -> dict:
    """One row per condition: reconstruction loss, transfer probe and classifier accuracy, each column on one range
    (conditions compare by height), up to ROWS_PER_FIGURE rows to a figure (`part`: that figure only)."""
    rows = phase_rows(metrics, readout)
    groups = list(rows.groupby("condition", sort=True))
    chunks = [groups[start:start + ROWS_PER_FIGURE] for start in range(0, len(groups), ROWS_PER_FIGURE)]
    drawings = {}
    for index, chunk in enumerate(chunks):
        if part is not None and index != part:
            continue
        drawing, axes = new_figure(3, len(chunk), width=5.4, height=3.2)  # room for each panel's legend at its right
        grid = axes.reshape(len(chunk), 3)
        for column in range(3):
            shared(grid[:, column], y=True)
        for panels, (condition, condition_rows) in zip(grid, chunk):
            draw_condition(panels, condition, condition_rows, readout)
        titled(drawing, "Learning phases, one row per condition (seed-mean curve with its interval); shaded: flat, "
                        "falling, rising reconstruction loss of the last hidden layer", 10)
        drawings["learning_phases" if len(chunks) == 1 else f"learning_phases_{index:02d}"] = drawing
    return drawings


def draw_condition(panels, condition: str, part: pd.DataFrame, readout) -> None:
    """One condition's row: reconstruction (hidden layers), transfer probe and classifier, its phases shaded."""
    advice = stop_table(readout.phases[readout.phases["condition"] == condition]) if len(readout.phases) else pd.DataFrame()
    for axis, (metric, split, label) in zip(panels, (RECONSTRUCTION, ("transfer_accuracy", "test", probe_label(part)))):
        chosen = part[(part["metric"] == metric) & (part["split"] == split) & ~part["layer"].isin(("input", "logits"))]
        seaborn.lineplot(chosen, x="iteration", y="value", hue="layer", errorbar=SEED_BAND, palette="viridis",
                         marker="o", markersize=3, ax=axis)
        iteration_axis(axis)
        axis.set_ylabel(fitted(label, 3.0, 9))
        shade_phases(axis, advice)
        legend_outside(axis, title="layer")
    classifier = part[part["metric"] == "classifier_accuracy"]
    seaborn.lineplot(classifier, x="iteration", y="value", hue="split", errorbar=SEED_BAND, marker="o", markersize=3,
                     ax=panels[2])
    iteration_axis(panels[2])
    panels[2].set_ylabel("classifier accuracy (fraction)")
    shade_phases(panels[2], advice)
    legend_outside(panels[2], title="split")
    titled(panels[0], f"{condition} ({part['run_id'].nunique()} run(s))", 9)
