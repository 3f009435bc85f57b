"""The learning phases of Schneider & Prabhushankar (LearnPhase, AAAI 2024), read from the metrics table.

    table = phase_table(metrics)          # one row per (run_id, layer): the phase boundaries, in iterations
    advice = stop_table(table, metrics)   # one row per run: "stop pre-training here"

A layer's linear-decoder reconstruction loss (test split) over training is (i) near constant, (ii)
falls, (iii) rises. On the log-spaced checkpoints, with tolerance τ = `tolerance` × (max − min) of
that layer's curve (default 5 % of its range, so the rule is scale-free):

- plateau_end: the last checkpoint before the loss first falls below (first value − τ): the end of
  phase (i). Missing when the loss never falls by τ.
- minimum: the checkpoint of the lowest loss after the plateau: the end of phase (ii).
- rise: the first checkpoint after the minimum whose loss exceeds (minimum + τ): phase (iii) has
  begun. Missing when the loss never rises by τ after its minimum.
- transfer_peak: the checkpoint of the highest transfer-probe accuracy (test split) — the
  colour-dominance task rises, then falls.
- classifier_best: the checkpoint of the highest classifier test accuracy (the network's own task).

The paper's advice — stop pre-training well before the classifier is best — is read at the last
hidden layer (the one a transfer task would reuse): stop at its transfer-probe peak, which the
paper finds at the end of phase (ii) or early in (iii).
"""

from __future__ import annotations

import math

import pandas as pd

PHASE_COLUMNS = ("plateau_end", "minimum", "rise", "transfer_peak", "classifier_best")


def curve(metrics: pd.DataFrame, metric: str, split: str = "test") -> pd.DataFrame:
    """Rows of one metric and split, with the columns the phase rules need, sorted by iteration."""
    chosen = metrics[(metrics["metric"] == metric) & (metrics["split"] == split)]
    return chosen[["run_id", "layer", "layer_index", "iteration", "value"]].sort_values(["run_id", "layer", "iteration"])


def reconstruction_phases(iterations: list[int], losses: list[float], tolerance: float) -> dict:
    """{plateau_end, minimum, rise} of one curve (module docstring); NaN where a phase is absent."""
    if len(losses) < 3:
        return {"plateau_end": math.nan, "minimum": math.nan, "rise": math.nan}
    spread = max(losses) - min(losses)
    margin = tolerance * spread
    left = next((index for index, loss in enumerate(losses) if loss < losses[0] - margin), None)
    if left is None or spread == 0:
        return {"plateau_end": math.nan, "minimum": math.nan, "rise": math.nan}
    lowest = min(range(left, len(losses)), key=losses.__getitem__)
    rise = next((index for index in range(lowest + 1, len(losses)) if losses[index] > losses[lowest] + margin), None)
    return {"plateau_end": iterations[left - 1], "minimum": iterations[lowest],
            "rise": iterations[rise] if rise is not None else math.nan}


def phase_table(metrics: pd.DataFrame, tolerance: float = 0.05) -> pd.DataFrame:
    """One row per (run_id, layer) with the iterations of PHASE_COLUMNS (module docstring)."""
    rows = []
    transfer = curve(metrics, "transfer_accuracy")
    classifier = curve(metrics, "classifier_accuracy")
    best = {run: group.loc[group["value"].idxmax(), "iteration"] for run, group in classifier.groupby("run_id")}
    peaks = {key: group.loc[group["value"].idxmax(), "iteration"] for key, group in transfer.groupby(["run_id", "layer"])}
    for (run, layer), group in curve(metrics, "reconstruction_mse").groupby(["run_id", "layer"]):
        row = {"run_id": run, "layer": layer, "layer_index": int(group["layer_index"].iloc[0])}
        row.update(reconstruction_phases(group["iteration"].tolist(), group["value"].tolist(), tolerance))
        row["transfer_peak"] = peaks.get((run, layer), math.nan)
        row["classifier_best"] = best.get(run, math.nan)
        rows.append(row)
    columns = ["run_id", "layer", "layer_index", *PHASE_COLUMNS]
    return pd.DataFrame(rows, columns=columns).sort_values(["run_id", "layer_index"]).reset_index(drop=True)


def stop_table(phases: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the last hidden layer's phases and `stop_pretraining_at` (its transfer peak)."""
    hidden = phases[~phases["layer"].isin(["input", "logits"])]
    last = hidden.loc[hidden.groupby("run_id")["layer_index"].idxmax()] if len(hidden) else hidden
    advice = last.rename(columns={"layer": "read_at_layer"}).drop(columns=["layer_index"])
    advice["stop_pretraining_at"] = advice["transfer_peak"]
    advice["before_classifier_best"] = advice["stop_pretraining_at"] < advice["classifier_best"]
    return advice.reset_index(drop=True)
