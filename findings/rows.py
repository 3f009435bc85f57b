"""One row of the read-out and its words: the columns, the verdict vocabulary, a level or an interval in words.

    row = finding("warm_start_gap", condition, estimate, estimate.verdict, statement, unit="test accuracy")

Every question module (learning.py, depth.py, plasticity.py, transfer.py) builds its rows here; readout.py
joins them into findings.csv (its COLUMNS).
"""

from __future__ import annotations

import math

import pandas as pd

from findings import noise

INTERMEDIATE, NO_INTERMEDIATE, MIXED, SIDE_BY_SIDE = ("intermediate collapse", "no intermediate collapse",
                                                      "not every seed", "side by side")
VERDICTS = (*noise.VERDICTS, INTERMEDIATE, NO_INTERMEDIATE, MIXED, SIDE_BY_SIDE)
STORIES = {"stop_pretraining": "Learning phases (LearnPhase)", "transfer_start": "Learning phases (LearnPhase)",
           "effective_depth": "Effective depth (IntermediateNC)",
           "effective_depth_trend": "Effective depth (IntermediateNC)",
           "warm_start_gap": "Warm start and resets (Berariu et al.)",
           "intervention": "Warm start and resets (Berariu et al.)"}
READ = ("reconstruction_mse", "transfer_accuracy", "classifier_accuracy", "ncc_accuracy", "effective_depth_literal")
COLUMNS = ("story", "question", "condition", "scope", "layer", "key", "estimate", "low", "high", "seeds", "resolution",
           "unit", "checkpoint", "compared_to", "verdict", "statement", "reason", "runs")


def finding(question: str, condition: str, estimate: noise.Estimate | None, verdict: str, statement: str, *,
            scope: str = "", layer: str = "", key: str = "", unit: str = "", checkpoint=math.nan,
            compared_to=math.nan, reason: str = "", runs=()) -> dict:
    """One row of the read-out (COLUMNS)."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not one of {VERDICTS}")
    numbers = ({"estimate": estimate.estimate, "low": estimate.low, "high": estimate.high, "seeds": estimate.seeds,
                "resolution": estimate.resolution} if estimate is not None else
               dict.fromkeys(("estimate", "low", "high", "resolution"), math.nan) | {"seeds": 0})
    return {"story": STORIES[question], "question": question, "condition": condition, "scope": scope, "layer": layer,
            "key": key, **numbers, "unit": unit, "checkpoint": checkpoint, "compared_to": compared_to,
            "verdict": verdict, "statement": statement, "reason": reason, "runs": " ".join(sorted(runs))}


def level_words(values, scale: float = 1.0, digits: int = 3, bounds=(-math.inf, math.inf)) -> str:
    """A level over seeds: `0.812 (97.5 % interval 0.790–0.834, 3 seeds)`, `0.812 (1 seed)`, `undefined`; the
    interval kept within `bounds` (an accuracy's [0, 1]: the t-interval of two seeds reaches far beyond)."""
    finite = [float(value) for value in values if value == value]
    if not finite:
        return "undefined"
    if len(finite) == 1:
        return f"{finite[0] * scale:.{digits}g} (1 seed)"
    mean, low, high = noise.t_interval(finite)
    low, high = max(low, bounds[0]), min(high, bounds[1])
    return f"{mean * scale:.{digits}g} ({noise.INTERVAL} {low * scale:.{digits}g}–{high * scale:.{digits}g}, {len(finite)} seeds)"


def verdict_words(estimate: noise.Estimate, higher: str, lower: str, neither: str) -> str:
    """The question's words for a verdict: `higher` / `lower` for a direction, else `no measurable difference
    (…)` with `neither` naming what was compared, and `(1 seed: no direction stated)` for one seed."""
    if estimate.verdict == noise.HIGHER:
        return higher
    if estimate.verdict == noise.LOWER:
        return lower
    if estimate.verdict == noise.ONE_SEED:
        return f"{neither} (1 seed: no direction stated)"
    if estimate.verdict == noise.NO_DIFFERENCE:
        return f"no measurable difference: {neither}"
    return f"{neither}: undefined"


def resolution_of(rows: pd.DataFrame) -> float:
    """A few test examples' worth of accuracy (noise.accuracy_resolution) from the rows' `examples` column;
    NaN when the table has none (then no direction is stated: the resolution is unknown)."""
    if "examples" not in rows or rows["examples"].isna().all():
        return math.nan
    return noise.accuracy_resolution(float(rows["examples"].min()))


def iteration_words(iteration) -> str:
    """`iteration 32`; a start at 0 is the random initialisation: `iteration 0 (no pre-training)`."""
    return "iteration 0 (no pre-training)" if iteration == 0 else f"iteration {iteration:g}"
