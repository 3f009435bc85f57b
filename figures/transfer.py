"""Transfer from any checkpoint (LearnPhase, AAAI 2024: stop pre-training before the classifier is best).

    drawings = transfer_curve(metrics, readout)   # findings/transfer.py's points, the read-out's parent phases

A child (`start_from_iteration`, `pretrain_dataset`, `stage2_train`: conf/plasticity.py) trains on its
own task from one checkpoint of its parent. The figure puts each child's final test accuracy at the
parent iteration it started from (its first checkpoint: iterations count on through the lineage),
fine-tuned and head-only apart, beside the parent's own test accuracy on its task and the parent's
phases as the read-out states them (findings/readout.py: the seed-mean curve's turns, the same numbers
as the report's table). One panel per parent condition (every setting but the seed held fixed), one
line per child condition (every setting but the seed and the start: style.grouping_keys); seeds are bands.
"""

from __future__ import annotations

import pandas as pd
import seaborn

from figures.registry import Skip, figure
from figures.style import SEED_BAND, iteration_axis, legend_outside, new_figure, shared, titled, x_labelled
from findings.phases import stop_table
from findings.transfer import classifier_test, transfer_points

PHASE_LINES = (("plateau_end", ":", "plateau ends"), ("minimum", "-.", "reconstruction minimum"),
               ("transfer_peak", "--", "probe peak (stop pre-training here)"), ("classifier_best", "-", "classifier best"))


def draw_parent(axis, metrics: pd.DataFrame, parent_ids, readout) -> None:
    """The parents' own test accuracy on their task (grey) and their condition's seed-mean phases (the read-out's)."""
    own = classifier_test(metrics)
    own = own[own["run_id"].isin(parent_ids)]
    subset = len(own) and (own["pretrain_fraction"] > 0).any()  # a stage-1 parent: tested on all of the classes
    task = f"{own['dataset'].iloc[0]} test" if len(own) else "?"
    seaborn.lineplot(own, x="iteration", y="value", color="grey", errorbar=SEED_BAND, ax=axis,
                     label=f"parent's test accuracy ({task}{', trained on a subset' if subset else ''})")
    conditions = {readout.labels.get(run) for run in parent_ids}
    phases = readout.phases
    if len(conditions) != 1 or phases.empty:
        return
    advice = stop_table(phases[phases["condition"] == conditions.pop()])
    for column, style, label in PHASE_LINES:
        value = advice[column].iloc[0] if len(advice) else float("nan")
        if value == value:  # not NaN: a turn the parent's seed-mean curves show
            axis.axvline(value, color="black", ls=style, lw=0.9, label=f"{label} ({value:g})")


@figure("transfer_curve", "LearnPhase (AAAI 2024): stop pre-training before the classifier is best", readout=True)
def transfer_curve(metrics: pd.DataFrame, readout) -> dict:
    points = transfer_points(metrics)
    if points.empty:
        raise Skip("no children started from a parent's checkpoint (start_from_iteration, pretrain_dataset) "
                   "with measured classifier accuracy")
    groups = list(points.groupby("parent condition", sort=True))
    drawing, axes = new_figure(len(groups), width=6.4)
    shared(axes, y=True)  # parent conditions side by side: one accuracy range
    for axis, (condition, part) in zip(axes, groups):
        task = ", ".join(sorted(part["dataset"].unique()))
        seaborn.lineplot(part, x="start_iteration", y="final_accuracy", hue="child condition", errorbar=SEED_BAND,
                         marker="o", ax=axis)
        draw_parent(axis, metrics, set(part["parent_run_id"]), readout)
        iteration_axis(axis)
        x_labelled(axis, "parent iteration (log scale; 0 at the left)")
        axis.set_ylabel(f"children's test accuracy ({task})")
        titled(axis, f"parent: {condition}", 9)
        legend_outside(axis)
    titled(drawing, "Children's final test accuracy vs the parent iteration they started from", 10)
    return {"transfer_curve": drawing}
