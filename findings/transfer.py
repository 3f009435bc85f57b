"""LearnPhase's transfer question, answered by the children: does stopping pre-training early help them?

    points = transfer_points(metrics)                  # one row per child: parent, start iteration, final accuracy
    rows = transfer_questions(metrics, runs, stops)    # transfer_start per parent condition and child condition

Per parent condition (its seeds) and child condition (fine-tuned or head-only, with every other child setting that
varies): the children's final test accuracy started at the parent condition's stop (its stop_pretraining
checkpoint, findings/learning.py, or the start trained nearest to it on the log scale, within a factor
NEAR; never the start at 0), at the latest start (the parent's
end when a child starts there), and at the best start, each a level over seeds. The verdict compares the
first two, paired by child seed (findings/noise.py): "stopping early helps (by …)", "stopping early hurts
(by …)" or "the start does not matter within noise". A start at 0 is the random initialisation: "no
pre-training".
"""

from __future__ import annotations

import math

import pandas as pd

from findings import noise
from findings.rows import finding, iteration_words, level_words, resolution_of
from findings.conditions import grouping_keys, missing, own_runs, condition_labels, setting_words, shown_value

# What a child's condition is besides its start, and what tells a parent's condition from its seeds'.
START_KEYS = ("seed", "start_from_iteration", "start_phase_layer", "pretrain_checkpoint_extra", "stage")


def classifier_test(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics[(metrics["metric"] == "classifier_accuracy") & (metrics["split"] == "test")]


def transfer_points(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per child of a parent that has a transfer child: its settings, `parent_run_id`,
    `start_iteration` (its first measured checkpoint), `final_accuracy` (test, at its last), `examples`,
    `child condition` and `parent condition` (empty when there is none)."""
    from findings.conditions import transferred

    accuracy = classifier_test(metrics)
    parents = set(accuracy.loc[transferred(accuracy), "parent_run_id"])
    children = accuracy[accuracy["parent_run_id"].isin(parents) & (accuracy["epochs"] > 0)]
    if children.empty:
        return pd.DataFrame()
    ordered = children.sort_values("iteration")
    rows = ordered.groupby("run_id").last()  # the last checkpoint's accuracy, with the run's settings
    rows["start_iteration"] = ordered.groupby("run_id")["iteration"].first()
    rows = rows.rename(columns={"value": "final_accuracy"}).reset_index()
    rows["child condition"] = child_conditions(rows)
    # a parent outside the table (a command-line filter that keeps its children only) still names its panel
    rows["parent condition"] = rows["parent_run_id"].map(parent_conditions(accuracy, parents)).fillna(
        "a parent not in the table (" + rows["parent_run_id"].str.rsplit("-", n=1).str[0] + ")")
    return rows


def child_conditions(children: pd.DataFrame) -> pd.Series:
    """Fine-tuned or head-only, with every other child setting that varies (never pooled into one line)."""
    others = grouping_keys(children, plotted=(*START_KEYS, "stage2_train"))
    words = children["stage2_train"].map({"all": "fine-tune all", "head": "head only (frozen features)"})
    if not others:
        return words
    return words + ", " + children.apply(lambda row: setting_words(row, others), axis=1)


def parent_conditions(accuracy: pd.DataFrame, parents: set) -> dict:
    """parent run id -> its condition in words (its settings but the seed: seeds of one condition share a panel)."""
    rows = accuracy[accuracy["run_id"].isin(parents)].drop_duplicates("run_id").set_index("run_id")
    keys = [key for key in grouping_keys(rows) if key not in ("dataset", "arch", "depth")]
    names = {run: f"{row['arch']}{'' if missing(row['depth']) else '-' + str(shown_value('depth', row['depth']))} on "
                  f"{row['dataset']}" for run, row in rows.iterrows()}  # a torchvision builder's run has no depth (null)
    return {run: f"{names[run]}, {setting_words(row, keys)}" if keys else names[run] for run, row in rows.iterrows()}


def transfer_questions(metrics: pd.DataFrame, runs: pd.DataFrame, stops: list[dict]) -> list[dict]:
    """One transfer_start row per parent condition and child condition (module docstring); `stops`: the
    stop_pretraining rows, whose conditions are labelled among the runs that trained from their own start."""
    points = transfer_points(metrics)
    if points.empty:
        return []
    labels = condition_labels(own_runs(runs), runs)
    stop_at = {row["condition"]: row for row in stops}
    rows = []
    for (parent, child), part in points.groupby(["parent condition", "child condition"], sort=True):
        conditions = {labels.get(run) for run in part["parent_run_id"]}
        stop = stop_at.get(next(iter(conditions))) if len(conditions) == 1 else None
        rows.append(transfer_row(f"{parent} → {child}", part, stop))
    return rows


NEAR = 2  # a start counts as the stop's when within this factor of it (log-spaced checkpoints: the next one)


def near_start(starts: list, peak: float):
    """The start nearest the stop on the log scale, if within a factor NEAR of it; a start at 0 (no
    pre-training) is never a stop's stand-in, unless the stop itself is 0."""
    if peak == 0:
        return 0 if 0 in starts else None
    candidates = [start for start in starts if start > 0 and max(start, peak) / min(start, peak) <= NEAR]
    return min(candidates, key=lambda start: (abs(math.log(start / peak)), start), default=None)


def transfer_row(condition: str, part: pd.DataFrame, stop: dict | None) -> dict:
    """The transfer_start row of one parent condition and child condition (module docstring)."""
    by_start = part.pivot_table(index="seed", columns="start_iteration", values="final_accuracy", aggfunc="first")
    starts, latest = sorted(by_start.columns), max(by_start.columns)
    best = max(starts, key=lambda start: by_start[start].mean())
    levels = (f"best start {iteration_words(best)}: {level_words(by_start[best], bounds=(0, 1))}; latest start "
              f"{iteration_words(latest)}: {level_words(by_start[latest], bounds=(0, 1))}")
    common = dict(unit="children's test accuracy", runs=part["run_id"], compared_to=latest)
    peak = stop["checkpoint"] if stop is not None else math.nan
    if peak != peak:
        why = stop["statement"] if stop is not None else (
            "the parent runs have no phases in the table: measure them with the children (a filter such as "
            "dataset= that matches only the children leaves them out)")
        return finding("transfer_start", condition, None, noise.UNDEFINED, f"no stop to test ({why}); {levels}",
                       reason="no stop", **common)
    nearest = near_start(starts, peak)
    if nearest is None or nearest == latest:
        return finding("transfer_start", condition, None, noise.UNDEFINED,
                       f"no child started near the parent's stop ({iteration_words(peak)}; starts within a factor "
                       f"{NEAR} of it, before the latest) to compare; {levels}", reason="no start near the stop", **common)
    change = noise.over_seeds((by_start[nearest] - by_start[latest]).dropna(), resolution_of(part))
    verdict = {noise.HIGHER: "stopping early helps", noise.LOWER: "stopping early hurts",
               noise.NO_DIFFERENCE: "the start does not matter within noise",
               noise.ONE_SEED: "stop vs latest start (1 seed: no direction stated)"}.get(change.verdict, "undefined")
    confirmed = "" if stop["verdict"] not in (noise.NO_DIFFERENCE, noise.UNDEFINED) else ", a peak not beyond noise"
    started = (f"children from the stop ({iteration_words(nearest)}, nearest the parent's probe peak at "
               f"{peak:g}{confirmed}): {level_words(by_start[nearest], bounds=(0, 1))}")
    return finding("transfer_start", condition, change, change.verdict,
                   (f"{verdict} (by {change.words('points', 100)})" if change.verdict in noise.DIRECTIONS else
                    f"{verdict}, {change.words('points', 100)}") + f": {started}; {levels}", checkpoint=nearest, **common)
