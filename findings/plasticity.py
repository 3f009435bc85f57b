"""The plasticity questions (Berariu et al. 2021): does a warm start end worse, and does an intervention help.

    rows = plasticity_questions(metrics, runs)   # warm_start_gap per warm-start condition, intervention per intervention

warm_start_gap: per plain warm-start condition, its final test accuracy minus its from-scratch twin's (the same
condition without pre-training: scratch_twin), paired by seed. intervention: per reset /
shrink-and-perturb condition, its final test accuracy minus the plain warm start's of the same seed. A verdict
needs the interval over seeds to exclude 0 by more than three test examples (findings/noise.py).
"""

from __future__ import annotations

import dataclasses
import math

import pandas as pd

from conf.plasticity import PRETRAINING_DEFAULTS
from findings import noise
from findings.rows import finding, level_words, resolution_of, verdict_words
from findings.conditions import condition_labels, settings_of

INTERVENTION_DEFAULTS = {"reset_last": 0, "shrink": 1.0, "perturb": 0.0}  # a plain warm start's


def protocol(row: pd.Series, extra=()) -> str:
    """scratch, warm start (or growing data over n + 1 stages), + reset last k, or shrink-and-perturb, + the
    other pretraining settings `extra` that vary among the warm-started runs drawn beside it (never pooled)."""
    if row["pretrain_fraction"] == 0:
        return "scratch"
    stages = int(row["stages"])
    parts = ["warm start" if stages == 1 else f"growing data, {stages + 1} stages"]
    if row["reset_last"]:
        parts.append(f"reset last {int(row['reset_last'])}")
    if row["shrink"] != 1 or row["perturb"] != 0:
        parts.append(f"shrink {row['shrink']:g}, perturb {row['perturb']:g}")
    if extra:
        parts.append(", ".join(f"{key}={row[key]}" for key in extra))
    return ", ".join(parts)


def scratch_twin(row: pd.Series) -> str:
    """The run id of a child's from-scratch twin: its settings with no pretraining (conf/plasticity.py)."""
    return dataclasses.replace(settings_of(row), pretrain_fraction=0.0, **PRETRAINING_DEFAULTS).run_id


def final_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """Each run's classifier test accuracy row at its last measured checkpoint (its highest layer)."""
    accuracy = metrics[(metrics["metric"] == "classifier_accuracy") & (metrics["split"] == "test")]
    accuracy = accuracy[accuracy["layer_index"] == accuracy.groupby("run_id")["layer_index"].transform("max")]
    return accuracy[accuracy["iteration"] == accuracy.groupby("run_id")["iteration"].transform("max")].drop_duplicates("run_id")


def warm_children(runs: pd.DataFrame) -> pd.DataFrame:
    """The warm-started children (the last stage, not a transfer child nor a sibling of one: figures/transfer.py's)."""
    from findings.conditions import transferred

    children = runs[runs["kind"] == "child"]
    transfer_parents = set(children.loc[transferred(children), "parent_run_id"])
    return children[~transferred(children) & ~children["parent_run_id"].isin(transfer_parents)]


def pairs_of(metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per warm child: its condition, seed, accuracy, the plain warm start and scratch twin it pairs with."""
    children = warm_children(runs)
    labels, rows = condition_labels(children, runs), []
    for _, row in children.iterrows():
        plain = dataclasses.replace(settings_of(row), **INTERVENTION_DEFAULTS).run_id
        rows.append({"run_id": row["run_id"], "condition": labels[row["run_id"]], "protocol": protocol(row),
                     "seed": row["seed"], "plain": plain, "scratch": scratch_twin(row)})
    return pd.DataFrame(rows)


def plasticity_questions(metrics: pd.DataFrame, runs: pd.DataFrame) -> list[dict]:
    """warm_start_gap per plain warm-start condition, then intervention per reset/shrink-perturb condition."""
    pairs = pairs_of(metrics, runs)
    if not len(pairs):
        return []
    final = final_rows(metrics)
    accuracy, iteration = final.set_index("run_id")["value"].to_dict(), final.set_index("run_id")["iteration"].to_dict()
    resolution = resolution_of(final)
    get = lambda runs: [accuracy.get(run, math.nan) for run in runs]  # noqa: E731
    rows = []
    for condition, part in pairs[pairs["run_id"] == pairs["plain"]].groupby("condition", sort=True):
        gap = noise.over_seeds([a - b for a, b in zip(get(part["run_id"]), get(part["scratch"]))], resolution)
        words = verdict_words(gap, "warm start ends better than training from scratch",
                              "warm start ends worse than training from scratch", "warm start vs training from scratch")
        text = (f"{words}, {gap.words('points', 100)} (final test accuracy: warm start "
                f"{level_words(get(part['run_id']), bounds=(0, 1))}, scratch "
                f"{level_words(get(part['scratch']), bounds=(0, 1))})" if gap.seeds else
                "no from-scratch twin of the same seed in the table (add pretrain_fraction=0 to the grid): no gap")
        rows.append(finding("warm_start_gap", condition, gap, gap.verdict, text, unit="test accuracy",
                            checkpoint=max(iteration.get(run, math.nan) for run in part["run_id"]),
                            runs=[*part["run_id"], *(run for run in part["scratch"] if run in accuracy)]))
    for condition, part in pairs[pairs["run_id"] != pairs["plain"]].groupby("condition", sort=True):
        change = noise.over_seeds([a - b for a, b in zip(get(part["run_id"]), get(part["plain"]))], resolution)
        what = part["protocol"].iloc[0]
        words = verdict_words(change, f"{what} ends better than the plain warm start",
                              f"{what} ends worse than the plain warm start", f"{what} vs the plain warm start")
        text = (f"{words}, {change.words('points', 100)}" if change.seeds else
                f"{what}: no plain warm start of the same seed in the table (add reset_last=0 to the grid)")
        rows.append(finding("intervention", condition, change, change.verdict, text, unit="test accuracy",
                            checkpoint=max(iteration.get(run, math.nan) for run in part["run_id"]),
                            runs=[*part["run_id"], *(run for run in part["plain"] if run in accuracy)]))
    return rows
