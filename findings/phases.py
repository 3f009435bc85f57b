"""The learning phases of Schneider & Prabhushankar (LearnPhase, AAAI 2024), read from the metrics table.

    seeds = seed_phase_table(metrics, labels)   # one row per (condition, layer): the seed-mean curve's phases
    advice = stop_table(seeds)                  # one row per condition: its last hidden layer, "stop pre-training here"
    table = phase_table(metrics)                # one row per (run_id, layer): each seed's own phases

The read-out (findings/readout.py) combines seeds one way: these rules on the mean curve over a condition's
seeds (labels: findings/conditions.py), at the checkpoints every seed has; its verdicts then ask whether the
seeds' own values at those checkpoints differ by more than their noise (findings/noise.py).

A layer's linear-decoder reconstruction loss (test split) over training is (i) near constant, (ii)
falls, (iii) rises; a transfer probe (colour dominance) first gains, then loses accuracy. The rules,
on the log-spaced checkpoints of one curve (values v_0 … v_n at iterations t_0 … t_n):

- Tolerance τ = `tolerance` × (max − min) of the raw curve (default 5 % of its range: scale-free). A
  spike widens the range, so it can only make τ larger and the rules more conservative.
- Every turn is located on the curve smoothed by Tukey's running median of three with his end-point
  rule (Tukey 1977, Exploratory Data Analysis §7: y_i = median(v_{i−1}, v_i, v_{i+1}); y_0 =
  median(v_0, y_1, 3y_1 − 2y_2), likewise at the end). A running median leaves a monotone stretch as it
  is and no single checkpoint can move it, so one early spike neither fakes a peak nor hides a phase;
  a curve of 3 checkpoints keeps its end points, one of fewer has no phases.
- Start level s = y_0: the smoothed first value (a spike at iteration 0 or 1 is not the start). The
  price: a loss that drops between the first two checkpoints and then stays flat reads as a spike at
  iteration 0, so that drop is not counted as a fall.
- plateau_end: the last checkpoint before the first one whose smoothed loss is below s − τ (end of
  phase (i)); the fall holds by construction (a one-checkpoint dip is smoothed away). Missing when
  the smoothed loss never falls by τ below s.
- minimum, with its band minimum_low … minimum_high: the band is every checkpoint from the fall on
  whose smoothed and raw losses are both within τ of the smoothed minimum (the raw one too, since the
  end-point rule may flatten a real turn at the last checkpoint); `minimum` is the raw lowest of the
  band; low and high are its earliest and latest iterations (the band need not be contiguous).
- rise: the first checkpoint after the minimum whose raw loss exceeds (raw minimum + τ): the first
  evidence of phase (iii), as LearnPhase's own sample log reads it; rise_held: the first checkpoint
  from which every later raw loss stays above (minimum + τ). Missing when it never rises by τ.
- transfer_peak, with transfer_peak_low … transfer_peak_high: the same band around the smoothed
  maximum of the transfer-probe accuracy (test split), the reported peak the raw highest of the band.
  Reported only if the smoothed accuracy rises more than τ above the RAW first checkpoint AND falls more
  than τ below the smoothed peak after it (a curve still rising at its last checkpoint has no peak). The
  raw start, not y_0: y_0 is extrapolated from y_1 and y_2, so a probe that rises from 0.705 to 0.771 by
  its second checkpoint and then falls would set its own start level and show no rise. A low first value
  could fake a rise on one curve; the read-out (findings/readout.py) states a peak only when the seeds'
  own rise and fall exceed their noise, and tests/test_readout.py measures how often it finds one that
  is not there.
- classifier_best, with classifier_best_low … classifier_best_high: the band around the smoothed
  maximum of the classifier's test accuracy (the network's own task); reported if it rises more than
  τ above its start (no fall needed: the classifier is usually best at the end).
- A missing turn is NaN and `missing_reason` says why, one clause per missing turn.

The paper's advice — stop pre-training well before the classifier is best — is read at the last
hidden layer (the one a transfer task would reuse): stop at its transfer-probe peak, which the paper
finds at the end of phase (ii) or early in (iii); its band says how early one may stop for a probe
within τ of its best.

Seeds: `seed_phase_table` averages each condition's curves over its seeds (at the checkpoints every
seed has) and applies the same rules to the mean curve, so every turn it names is a checkpoint.
"""

from __future__ import annotations

import math
import statistics

import pandas as pd

PHASE_COLUMNS = ("plateau_end", "minimum", "rise", "transfer_peak", "classifier_best")
BAND_COLUMNS = ("minimum_low", "minimum_high", "rise_held", "transfer_peak_low", "transfer_peak_high",
                "classifier_best_low", "classifier_best_high")
TOLERANCE_COLUMNS = ("reconstruction_tolerance", "transfer_tolerance")  # τ in the curve's own units
MINIMUM_CHECKPOINTS = 3  # a fall and a rise need at least three points


def curve(metrics: pd.DataFrame, metric: str, split: str = "test") -> pd.DataFrame:
    """Rows of one metric and split, with the columns the phase rules need, sorted by iteration."""
    chosen = metrics[(metrics["metric"] == metric) & (metrics["split"] == split) & metrics["value"].notna()]
    return chosen[["run_id", "layer", "layer_index", "iteration", "value"]].sort_values(["run_id", "layer", "iteration"])


def running_median(values: list[float]) -> list[float]:
    """Tukey's running median of three with his end-point rule (module docstring)."""
    if len(values) < 3:
        return list(values)
    smooth = [values[0]] + [statistics.median(values[index - 1:index + 2]) for index in range(1, len(values) - 1)]
    smooth.append(values[-1])
    if len(values) >= 4:  # extrapolate the two smoothed neighbours to the end points
        smooth[0] = statistics.median([values[0], smooth[1], 3 * smooth[1] - 2 * smooth[2]])
        smooth[-1] = statistics.median([values[-1], smooth[-2], 3 * smooth[-2] - 2 * smooth[-3]])
    return smooth


def extreme_band(iterations: list, values: list[float], smooth: list[float], margin: float, first: int = 0,
                 sign: int = 1) -> dict:
    """{at, low, high, index}: the band of checkpoints from `first` on whose smoothed value is within `margin`
    of the smoothed extreme (sign +1: maximum, −1: minimum), and the raw extreme of that band."""
    best = max(sign * smooth[index] for index in range(first, len(smooth)))
    near = [index for index in range(first, len(smooth)) if sign * smooth[index] >= best - margin]
    # the raw value must agree too: the end-point rule may flatten a real last-checkpoint turn
    band = [index for index in near if sign * values[index] >= best - margin] or near
    at = max(band, key=lambda index: sign * values[index])  # the first of equal raw values
    return {"at": iterations[at], "low": iterations[band[0]], "high": iterations[band[-1]], "index": at,
            "smoothed": sign * best}


def tolerance_and_smoothed(values: list[float], tolerance: float, what: str, reasons: list) -> tuple | None:
    """(τ, the running-median curve), or None with the reason appended when the curve is too short for turns."""
    if len(values) < MINIMUM_CHECKPOINTS:
        reasons.append(f"{what} at {len(values)} checkpoint(s), fewer than {MINIMUM_CHECKPOINTS}")
        return None
    return tolerance * (max(values) - min(values)), running_median(values)


def reconstruction_turns(iterations: list, losses: list[float], tolerance: float) -> dict:
    """Every reconstruction turn of one curve with its band, τ and `reasons` (module docstring)."""
    turns = dict.fromkeys(("plateau_end", "minimum", "minimum_low", "minimum_high", "rise", "rise_held"), math.nan)
    turns["reconstruction_tolerance"], turns["reasons"] = math.nan, []
    prepared = tolerance_and_smoothed(losses, tolerance, "reconstruction loss", turns["reasons"])
    if prepared is None:
        return turns
    margin, smooth = prepared
    turns["reconstruction_tolerance"] = margin
    fall = next((index for index in range(1, len(smooth)) if smooth[index] < smooth[0] - margin), None)
    if margin == 0 or fall is None:
        turns["reasons"].append(f"reconstruction loss never falls more than τ={margin:.3g} below its start level")
        return turns
    lowest = extreme_band(iterations, losses, smooth, margin, first=fall, sign=-1)
    turns.update(plateau_end=iterations[fall - 1], minimum=lowest["at"], minimum_low=lowest["low"],
                 minimum_high=lowest["high"])
    above = [index > lowest["index"] and losses[index] > losses[lowest["index"]] + margin for index in range(len(losses))]
    rise = next((index for index, risen in enumerate(above) if risen), None)
    if rise is None:
        turns["reasons"].append(f"reconstruction loss never rises more than τ={margin:.3g} above its minimum")
        return turns
    # the first checkpoint from which every later one stays risen; none when the last has fallen back
    held = next((index for index in range(rise, len(above)) if all(above[index:])), None)
    turns.update(rise=iterations[rise], rise_held=iterations[held] if held is not None else math.nan)
    if held is None:
        turns["reasons"].append(f"reconstruction loss falls back within τ={margin:.3g} of its minimum at the end")
    return turns


def peak_turns(iterations: list, values: list[float], tolerance: float, name: str, must_fall: bool) -> dict:
    """{name, name_low, name_high, tolerance, reasons}: the smoothed maximum's band and raw peak, reported
    only if the curve rises more than τ above its start level and (`must_fall`) falls τ below it after."""
    turns = {name: math.nan, f"{name}_low": math.nan, f"{name}_high": math.nan, "tolerance": math.nan, "reasons": []}
    what = "transfer-probe accuracy" if name == "transfer_peak" else "classifier test accuracy"
    prepared = tolerance_and_smoothed(values, tolerance, what, turns["reasons"])
    if prepared is None:
        return turns
    margin, smooth = prepared
    turns["tolerance"] = margin
    peak = extreme_band(iterations, values, smooth, margin)
    # the start level is the raw first checkpoint: the end-point rule extrapolates y_0 from the next two, so a
    # rise completed by the second log-spaced checkpoint would set its own start level and vanish
    if margin == 0 or peak["smoothed"] <= values[0] + margin:
        turns["reasons"].append(f"{what} never rises more than τ={margin:.3g} above its start level")
        return turns
    after = smooth[peak["index"] + 1:]
    if must_fall and not any(value < peak["smoothed"] - margin for value in after):
        turns["reasons"].append(f"{what} does not fall more than τ={margin:.3g} after its highest point "
                                f"(iteration {peak['at']}): no peak yet")
        return turns
    turns.update({name: peak["at"], f"{name}_low": peak["low"], f"{name}_high": peak["high"]})
    return turns


def classifier_curves(metrics: pd.DataFrame) -> dict:
    """run id -> (iterations, accuracies) of the classifier's test accuracy (its highest layer's rows)."""
    classifier = curve(metrics, "classifier_accuracy")
    curves = {}
    for run, group in classifier.groupby("run_id"):
        group = group[group["layer_index"] == group["layer_index"].max()]
        curves[run] = (group["iteration"].tolist(), group["value"].tolist())
    return curves


def phase_table(metrics: pd.DataFrame, tolerance: float = 0.05) -> pd.DataFrame:
    """One row per (run_id, layer) with the iterations of PHASE_COLUMNS, their bands, τ and
    `missing_reason` (module docstring)."""
    transfer = {key: (group["iteration"].tolist(), group["value"].tolist())
                for key, group in curve(metrics, "transfer_accuracy").groupby(["run_id", "layer"])}
    best = {run: peak_turns(*points, tolerance, "classifier_best", must_fall=False)
            for run, points in classifier_curves(metrics).items()}
    rows = []
    for (run, layer), group in curve(metrics, "reconstruction_mse").groupby(["run_id", "layer"]):
        row = {"run_id": run, "layer": layer, "layer_index": int(group["layer_index"].iloc[0])}
        turns = reconstruction_turns(group["iteration"].tolist(), group["value"].tolist(), tolerance)
        reasons = turns.pop("reasons")
        row.update(turns)
        if (run, layer) in transfer:
            peak = peak_turns(*transfer[run, layer], tolerance, "transfer_peak", must_fall=True)
            row["transfer_tolerance"] = peak.pop("tolerance")
            reasons += peak.pop("reasons")
            row.update(peak)
        if run in best:
            classifier = dict(best[run])
            reasons += classifier["reasons"]
            row.update({key: classifier[key] for key in ("classifier_best", "classifier_best_low", "classifier_best_high")})
        else:
            reasons.append("no classifier test accuracy")
        row["missing_reason"] = "; ".join(reasons)
        rows.append(row)
    columns = ["run_id", "layer", "layer_index", *PHASE_COLUMNS, *BAND_COLUMNS, *TOLERANCE_COLUMNS, "missing_reason"]
    return pd.DataFrame(rows, columns=columns).sort_values(["run_id", "layer_index"]).reset_index(drop=True)


def stop_table(phases: pd.DataFrame, by: str = "condition") -> pd.DataFrame:
    """One row per condition (of seed_phase_table; per run with by="run_id", of phase_table): the last hidden
    layer's phases and `stop_pretraining_at` (its transfer peak), with its band."""
    hidden = phases[~phases["layer"].isin(["input", "logits"])]
    last = hidden.loc[hidden.groupby(by)["layer_index"].idxmax()] if len(hidden) else hidden
    advice = last.rename(columns={"layer": "read_at_layer"}).drop(columns=["layer_index"])
    advice["stop_pretraining_at"] = advice["transfer_peak"]
    advice["before_classifier_best"] = advice["stop_pretraining_at"] < advice["classifier_best"]
    return advice.reset_index(drop=True)


# ---- seeds: one way of combining them ---------------------------------------------------------------

def seed_mean_table(metrics: pd.DataFrame, labels: dict) -> pd.DataFrame:
    """The table with each condition's runs replaced by their mean over seeds (run_id = the condition's label,
    `labels`: run id -> condition), kept at the checkpoints every seed of the condition has; `seeds` counts them."""
    rows = metrics.assign(condition=metrics["run_id"].map(labels))
    seeds = rows.groupby("condition")["run_id"].nunique()
    keys = ["condition", "layer", "layer_index", "metric", "split", "iteration"]
    mean = rows.groupby(keys, dropna=False).agg(value=("value", "mean"), runs=("run_id", "nunique")).reset_index()
    mean = mean[mean["runs"] == mean["condition"].map(seeds)]
    return mean.assign(run_id=mean["condition"], seeds=mean["condition"].map(seeds)).drop(columns=["runs"])


def seed_phase_table(metrics: pd.DataFrame, labels: dict, tolerance: float = 0.05) -> pd.DataFrame:
    """One row per (condition, layer): the phases of the seed-mean curves (same rules as phase_table), with the
    condition's `runs` (", "-joined) and `seeds`. `labels`: run id -> condition. Seeds are combined this one way:
    no turn is a median or a spread of the seeds' own turns (those would name iterations no checkpoint has)."""
    mean = seed_mean_table(metrics, labels)
    table = phase_table(mean, tolerance).rename(columns={"run_id": "condition"})
    members = pd.Series(labels).rename_axis("run_id").reset_index(name="condition")
    members = members[members["run_id"].isin(metrics["run_id"])].groupby("condition")["run_id"]
    table.insert(1, "runs", table["condition"].map(members.agg(lambda runs: ", ".join(sorted(runs)))))
    table.insert(2, "seeds", table["condition"].map(members.nunique()))
    return table
