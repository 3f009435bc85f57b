"""Transfer from any checkpoint (LearnPhase, AAAI 2024: stop pre-training before the classifier is best).

    curves = transfer_points(metrics)     # one row per child: its parent, start iteration, final test accuracy
    summary = transfer_summary(metrics)   # per parent recipe and child recipe: the best start vs the classifier's best

A child (`start_from_iteration`, `pretrain_dataset`, `stage2_train`: conf/plasticity.py) trains on its
own task from one checkpoint of its parent. The figure puts each child's final test accuracy at the
parent iteration it started from (its first checkpoint: iterations count on through the lineage),
fine-tuned and head-only apart, beside the parent's own test accuracy on its task and the parent's
phases (figures/phases.py). One panel per parent recipe (every setting but the seed held fixed), one
line per child recipe (every setting but the seed and the start: style.grouping_keys); seeds are bands.
"""

from __future__ import annotations

import pandas as pd
import seaborn

from figures.phases import phase_table, stop_table
from figures.registry import Skip, figure
from figures.style import SEED_BAND, describe, grouping_keys, iteration_axis, legend_outside, new_figure, transferred

# What a child's recipe is besides its start, and what tells a parent's recipe from its seeds'.
START_KEYS = ("seed", "start_from_iteration", "start_phase_layer", "pretrain_checkpoint_extra", "stage")
PHASE_LINES = (("plateau_end", ":", "plateau ends"), ("minimum", "-.", "reconstruction minimum"),
               ("transfer_peak", "--", "stop pre-training here"), ("classifier_best", "-", "classifier best"))


def classifier_test(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics[(metrics["metric"] == "classifier_accuracy") & (metrics["split"] == "test")]


def transfer_points(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per child of a parent that has a transfer child: its settings, `parent_run_id`,
    `start_iteration` (its first measured checkpoint) and `final_accuracy` (test, at its last)."""
    accuracy = classifier_test(metrics)
    parents = set(accuracy.loc[transferred(accuracy), "parent_run_id"])
    children = accuracy[accuracy["parent_run_id"].isin(parents) & (accuracy["epochs"] > 0)]
    if children.empty:
        raise Skip("no children started from a parent's checkpoint (start_from_iteration, pretrain_dataset) "
                   "with measured classifier accuracy")
    ordered = children.sort_values("iteration")
    rows = ordered.groupby("run_id").last()  # the last checkpoint's accuracy, with the run's settings
    rows["start_iteration"] = ordered.groupby("run_id")["iteration"].first()
    rows = rows.rename(columns={"value": "final_accuracy"}).reset_index()
    rows["child recipe"] = child_recipes(rows)
    rows["parent recipe"] = rows["parent_run_id"].map(parent_recipes(accuracy, parents))
    return rows


def child_recipes(children: pd.DataFrame) -> pd.Series:
    """Fine-tuned or head-only, with every other child setting that varies (never pooled into one line)."""
    others = grouping_keys(children, plotted=(*START_KEYS, "stage2_train"))
    words = children["stage2_train"].map({"all": "fine-tune all", "head": "head only (frozen features)"})
    if not others:
        return words
    return words + ", " + children.apply(lambda row: describe(row, others), axis=1)


def parent_recipes(accuracy: pd.DataFrame, parents: set) -> dict:
    """parent run id -> its recipe in words (its settings but the seed: seeds of one recipe share a panel)."""
    rows = accuracy[accuracy["run_id"].isin(parents)].drop_duplicates("run_id").set_index("run_id")
    keys = [key for key in grouping_keys(rows) if key not in ("dataset", "arch", "depth")]
    names = {run: f"{row['arch']}-{row['depth']} on {row['dataset']}" for run, row in rows.iterrows()}
    return {run: f"{names[run]}, {describe(row, keys)}" if keys else names[run] for run, row in rows.iterrows()}


def draw_parent(axis, metrics: pd.DataFrame, parent_ids) -> None:
    """The parents' own test accuracy on their task (grey) and their phases (median over seeds)."""
    own = classifier_test(metrics)
    own = own[own["run_id"].isin(parent_ids)]
    subset = len(own) and (own["pretrain_fraction"] > 0).any()  # a stage-1 parent: tested on all of the classes
    task = f"{own['dataset'].iloc[0]} test" if len(own) else "?"
    seaborn.lineplot(own, x="iteration", y="value", color="grey", errorbar=SEED_BAND, ax=axis,
                     label=f"parent's test accuracy ({task}{', trained on a subset' if subset else ''})")
    advice = stop_table(phase_table(metrics[metrics["run_id"].isin(parent_ids)]))
    for column, style, label in PHASE_LINES:
        value = advice[column].median() if len(advice) else float("nan")
        if value == value:  # not NaN: a phase the parent's curves show
            axis.axvline(value, color="black", ls=style, lw=0.9, label=f"{label} ({value:g})")


@figure("transfer_curve", "LearnPhase (AAAI 2024): stop pre-training before the classifier is best")
def transfer_curve(metrics: pd.DataFrame) -> dict:
    points = transfer_points(metrics)
    groups = list(points.groupby("parent recipe", sort=True))
    drawing, axes = new_figure(len(groups), width=6.4)
    for axis, (recipe, part) in zip(axes, groups):
        task = ", ".join(sorted(part["dataset"].unique()))
        seaborn.lineplot(part, x="start_iteration", y="final_accuracy", hue="child recipe", errorbar=SEED_BAND,
                         marker="o", ax=axis)
        draw_parent(axis, metrics, set(part["parent_run_id"]))
        iteration_axis(axis)
        axis.set_xlabel("parent iteration (log scale; 0 at the left)")
        axis.set_ylabel(f"children's test accuracy ({task})")
        axis.set_title(f"parent: {recipe}", fontsize=9)
        legend_outside(axis)
    drawing.suptitle("Children's final test accuracy vs the parent\niteration they started from", fontsize=10)
    return {"transfer_curve": drawing}


BEST_TOLERANCE = 0.05  # of the range of the children's mean final accuracies over starts (figures/phases.py's τ)


def transfer_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per parent recipe and child recipe: the start iteration whose children ended best (mean over
    seeds), that accuracy, the children's from the parent's end, and the parent's best classifier
    iteration (median over seeds) — LearnPhase's claim is that the first comes well before the last."""
    try:
        points = transfer_points(metrics)
    except Skip:
        return pd.DataFrame()
    advice = stop_table(phase_table(metrics[metrics["run_id"].isin(set(points["parent_run_id"]))]))
    best_classifier = classifier_best(metrics, set(points["parent_run_id"]))
    rows = []
    for (parent, child), part in points.groupby(["parent recipe", "child recipe"], sort=True):
        means = part.groupby("start_iteration")["final_accuracy"].agg(["mean", "std", "count"])
        best = means["mean"].idxmax()
        # as figures/phases.py: a start within τ (5 % of the means' range) of the best is as good, so the
        # earliest of them is how early the parent could have stopped for this child
        tolerance = BEST_TOLERANCE * (means["mean"].max() - means["mean"].min())
        tied = means.index[means["mean"] >= means["mean"].max() - tolerance]
        parents = set(part["parent_run_id"])
        classifier = pd.Series([best_classifier[run] for run in parents if run in best_classifier]).median()
        stop = advice.loc[advice["run_id"].isin(parents), "stop_pretraining_at"].median() if len(advice) else float("nan")
        rows.append({"parent": parent, "child": child, "best start iteration": best,
                     "earliest start within τ": min(tied), "τ": tolerance,
                     "its final accuracy": means.loc[best, "mean"], "seeds": int(means.loc[best, "count"]),
                     "spread (std)": means.loc[best, "std"], "from the latest start": means["mean"].iloc[-1],
                     "parent's classifier best": classifier, "stop pre-training here": stop,
                     "best start before classifier best": bool(best < classifier) if classifier == classifier else None,
                     "earliest within τ before classifier best": bool(min(tied) < classifier)
                     if classifier == classifier else None})
    return pd.DataFrame(rows)


def classifier_best(metrics: pd.DataFrame, runs: set) -> dict:
    """run id -> the iteration of its highest test classifier accuracy."""
    own = classifier_test(metrics)
    own = own[own["run_id"].isin(runs)]
    return {run: part.loc[part["value"].idxmax(), "iteration"] for run, part in own.groupby("run_id")}
