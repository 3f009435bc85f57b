"""The LearnPhase question per condition: where to stop pre-training, and whether that beats the classifier's best.

    phases, rows = stop_questions(metrics, runs)   # phases.csv's rows (per condition and layer), stop_pretraining rows

Read at the last hidden layer (the one a transfer task reuses), on the seed-mean curves (findings/phases.py):
the transfer probe's peak P and the classifier's best C. With two or more seeds the peak is stated only when
the seeds' own probe at P lies above their probe at the first and at the last checkpoint by more than the
noise (findings/noise.py, each paired by seed); the advice "stop before the classifier is best" only when
P < C and the seeds' probe at P lies above their probe at C by more than the noise. One seed: the
iterations, no direction. Children (findings/conditions.py) have no phases.
"""

from __future__ import annotations


import pandas as pd

from findings import noise
from findings.phases import seed_phase_table, stop_table
from findings.rows import finding, iteration_words, resolution_of
from findings.conditions import own_runs, condition_keys, condition_labels, scope_words

CURVES = ("reconstruction_mse", "transfer_accuracy", "classifier_accuracy")


def stop_questions(metrics: pd.DataFrame, runs: pd.DataFrame, tolerance: float) -> tuple[pd.DataFrame, list[dict]]:
    """(the seed-mean phases per condition and layer with the condition's settings, one stop_pretraining row per condition)."""
    own = own_runs(runs)
    chosen = metrics[metrics["run_id"].isin(own["run_id"]) & metrics["metric"].isin(CURVES)]
    if not (chosen["metric"] == "reconstruction_mse").any():
        return pd.DataFrame(), []
    labels = condition_labels(own, runs)
    phases = seed_phase_table(chosen, labels, tolerance)
    settings = own.assign(condition=own["run_id"].map(labels)).drop_duplicates("condition")
    phases = phases.merge(settings[["condition", *condition_keys(own)]], on="condition", how="left")
    probes = chosen[(chosen["metric"] == "transfer_accuracy") & (chosen["split"] == "test")]
    curves = probes.pivot_table(index=["layer", "run_id"], columns="iteration", values="value", aggfunc="first")
    resolutions = {layer: resolution_of(part) for layer, part in probes.groupby("layer")}
    scopes = {condition: scope_words(part, runs) for condition, part in own.groupby(own["run_id"].map(labels))}
    rows = [stop_row(advice, curves, resolutions, scopes[advice["condition"]]) for _, advice in stop_table(phases).iterrows()]
    return phases, rows


def paired(table: pd.DataFrame, first, second) -> list[float]:
    """Per seed (row): the value at iteration `first` minus the value at `second`."""
    return list(table[first] - table[second]) if first in table and second in table else []


def stop_row(advice: pd.Series, curves: pd.DataFrame, resolutions: dict, scope: str) -> dict:
    """The stop_pretraining row of one condition (module docstring); `curves`: (layer, run id) × iteration -> the
    probe's test accuracy, `resolutions`: layer -> its resolution."""
    runs, layer, peak, best = advice["runs"].split(", "), advice["read_at_layer"], advice["transfer_peak"], advice["classifier_best"]
    common = dict(scope=scope, layer=layer, unit="probe accuracy", runs=runs, checkpoint=peak, compared_to=best)
    if peak != peak:
        reason = "; ".join(part for part in str(advice["missing_reason"]).split("; ") if "transfer" in part)
        return finding("stop_pretraining", advice["condition"], None, noise.UNDEFINED,
                       f"no 'stop pre-training here' at {layer}: {reason or 'no transfer probe measured'}",
                       reason=reason or "no transfer_accuracy rows", **common)
    resolution = resolutions[layer]
    probe = curves.loc[layer].reindex(runs).dropna(axis=1)  # the checkpoints every seed has, as the mean curve's
    rise = noise.over_seeds(paired(probe, peak, probe.columns.min()), resolution)
    fall = noise.over_seeds(paired(probe, peak, probe.columns.max()), resolution)
    where = f"the probe of {layer} peaks at {iteration_words(peak)}"
    if rise.seeds == 1:  # the value at P against C (or, without a classifier best, against the start)
        after = f", the classifier is best at {iteration_words(best)}" if best == best else ""
        value = noise.over_seeds(paired(probe, peak, best), resolution) if best == best else rise
        return finding("stop_pretraining", advice["condition"], value, noise.ONE_SEED,
                       f"{where}{after} (1 seed: no direction stated)", reason="one seed",
                       **{**common, "compared_to": best if best == best else probe.columns.min()})
    if not (rise.verdict == noise.HIGHER and fall.verdict == noise.HIGHER):  # the row's number: the rise
        return finding("stop_pretraining", advice["condition"], rise, noise.NO_DIFFERENCE,
                       f"no peak beyond noise: {where} of the mean curve, but the seeds' probe there is "
                       f"{rise.words('points', 100)} above the first checkpoint and {fall.words('points', 100)} "
                       "above the last", reason="rise or fall within noise",
                       **{**common, "compared_to": probe.columns.min()})
    if best != best:
        return finding("stop_pretraining", advice["condition"], None, noise.UNDEFINED,
                       f"{where}; the classifier's best is not established (its accuracy never rises by τ)",
                       reason="no classifier best", **common)
    gain = noise.over_seeds(paired(probe, peak, best), resolution)
    if peak >= best:  # the question (does stopping before the classifier's best gain?) does not arise
        return finding("stop_pretraining", advice["condition"], gain, noise.UNDEFINED,
                       f"{where}, not before the classifier's best ({iteration_words(best)})",
                       reason="the probe peaks at or after the classifier's best", **common)
    if gain.verdict == noise.HIGHER:
        text = (f"stop pre-training at {iteration_words(peak)}, before the classifier's best at {best:g}: "
                f"the probe of {layer} is higher there by {gain.words('points', 100)}")
    elif gain.verdict == noise.LOWER:  # the mean curve's peak, yet the seeds' probe is higher at C
        text = (f"{where}, before the classifier's best at {best:g}, but the seeds' probe is lower there, by "
                f"{gain.words('points', 100)}: stop at the classifier's best")
    else:
        text = (f"{where}, before the classifier's best at {best:g}, but stopping there gains "
                f"{gain.words('points', 100)}: no measurable difference")
    return finding("stop_pretraining", advice["condition"], gain, gain.verdict, text, reason=rise.words("points", 100)
                   + " rise, " + fall.words("points", 100) + " fall", **common)
