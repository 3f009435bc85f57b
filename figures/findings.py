"""The findings a report states first, as plain data from the metrics table, and one sentence each.

    found = findings(metrics, runs)          # list of dicts, each with `kind` and `recipe`
    lines = sentences(found)                 # one plain-English sentence per finding

A recipe is a run's settings but the seed (figures/phases.py: recipe_keys); findings are made per
recipe and never pool two (nor two data sizes: the data settings are part of the recipe). Kinds:

- effective_depth (Galanti et al., TMLR 2023): per recipe, at each run's last measured checkpoint,
  `effective_depth` (first layer within ε of the last layer's NCC train accuracy) and
  `effective_depth_literal` (the paper's: first layer with NCC train error ≤ ε). The first one at the
  last layer is degenerate: it means "no intermediate collapse at this checkpoint", not a depth.
- effective_depth_trend: per swept key, over recipes that differ in that key only, the effective depth
  of the runs that collapse at an intermediate layer; a direction is stated only when every value of
  the key has such runs (else the "trend" would only count the layers of the deeper nets).
- stop_pretraining (Schneider & Prabhushankar, AAAI 2024): per recipe, the seed-mean curves' phases at
  the last hidden layer (figures/phases.py): the transfer-probe peak with its tolerance band and the
  seeds' spread, against the classifier's best.
- warm_start_gap (Berariu et al. 2021): per warm-start recipe, scratch − warm start final test
  accuracy, paired by seed with the from-scratch twin (figures/plasticity.py: scratch_twin).
- intervention: per reset / shrink-and-perturb recipe, what it recovered: its final test accuracy −
  the plain warm start's of the same seed, and that as a share of the same seed's gap.

Spreads are over seeds: min, max and standard deviation, and "1 seed, no spread" when there is one.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import pandas as pd

from figures.finding_sentences import sentence, sentences  # noqa: F401  (the findings' one reading in words)
from figures.phases import recipe_keys, recipe_labels, seed_phase_table, stop_table

INTERVENTION_DEFAULTS = {"reset_last": 0, "shrink": 1.0, "perturb": 0.0}  # a plain warm start's
KINDS = ("effective_depth", "effective_depth_trend", "stop_pretraining", "warm_start_gap", "intervention")


def findings(metrics: pd.DataFrame, runs: pd.DataFrame | None = None, tolerance: float = 0.05) -> list[dict]:
    """Every finding the table supports, in KINDS order; `runs` (figures/publish.py: run_table, with
    run_id and state) marks the runs not done in each finding's `unfinished`."""
    own = metrics[~is_child(metrics)]  # a child's curves start from its parent's: they have no phases of their own
    depth = depth_table(own)
    found = [*depth_findings(depth), *depth_trend_findings(depth), *stop_findings(own, tolerance),
             *plasticity_findings(metrics)]
    if runs is not None and len(runs) and {"run_id", "state"} <= set(runs):
        undone = set(runs.loc[runs["state"] != "done", "run_id"])
        for finding in found:
            finding["unfinished"] = sorted(undone & set(finding.get("runs", ())))
    return found


def is_child(metrics: pd.DataFrame) -> pd.Series:
    """Rows of runs that started from a parent run's state (warm-started, transfer and later-stage runs)."""
    if "parent_run_id" not in metrics:
        return pd.Series(False, index=metrics.index)
    parent = metrics["parent_run_id"]
    return parent.notna() & (parent.astype(str) != "")


def spread(values) -> dict:
    """{n, mean, min, max, std} of the finite values (std NaN for fewer than two)."""
    values = [float(value) for value in values if value == value]
    if not values:
        return {"n": 0, "mean": math.nan, "min": math.nan, "max": math.nan, "std": math.nan}
    return {"n": len(values), "mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "std": statistics.stdev(values) if len(values) > 1 else math.nan}


# ---- effective depth ---------------------------------------------------------------------------------

def depth_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per run with effective_depth rows, at its last such checkpoint: both definitions, the layer
    names they point at, the last layer's index and `no_intermediate_collapse` (effective depth = last)."""
    labels = recipe_labels(metrics) if len(metrics) else {}
    depth = metrics[(metrics["metric"] == "effective_depth") & (metrics["split"] == "train")]
    rows = []
    for run, part in depth.groupby("run_id"):
        last = part[part["iteration"] == part["iteration"].max()].iloc[0]
        checkpoint = metrics[(metrics["run_id"] == run) & (metrics["iteration"] == last["iteration"])]
        names = layer_names(checkpoint)
        literal = checkpoint.loc[checkpoint["metric"] == "effective_depth_literal", "value"]
        value, literal_value = float(last["value"]), float(literal.iloc[0]) if len(literal) else math.nan
        final = len(names) - 1 if names else math.nan
        rows.append({"run_id": run, "recipe": labels[run], "seed": last.get("seed", math.nan),
                     "iteration": int(last["iteration"]), "effective_depth": value,
                     "effective_depth_layer": layer_name(names, value), "effective_depth_literal": literal_value,
                     "effective_depth_literal_layer": layer_name(names, literal_value),
                     "literal_measured": bool(len(literal)), "last_layer_index": final,
                     "no_intermediate_collapse": value == final,
                     **{key: last[key] for key in recipe_keys(metrics)}})
    return pd.DataFrame(rows)


def layer_names(checkpoint: pd.DataFrame) -> list[str]:
    """The layers effective depth indexes (the engine's measured layers, in depth order), from the NCC rows."""
    ncc = checkpoint[(checkpoint["metric"] == "ncc_accuracy") & (checkpoint["split"] == "train")]
    return list(ncc.sort_values("layer_index").drop_duplicates("layer")["layer"])


def layer_name(names: list[str], index: float) -> str:
    return names[int(index)] if index == index and 0 <= index < len(names) else ""


def depth_findings(depth: pd.DataFrame) -> list[dict]:
    """Per recipe: each run's effective depth (both definitions) and how many collapse at an intermediate layer."""
    found = []
    for recipe, part in depth.groupby("recipe", sort=True) if len(depth) else []:
        collapsed = part[~part["no_intermediate_collapse"]]
        literal = part[part["literal_measured"]]
        found.append({"kind": "effective_depth", "recipe": recipe, "runs": sorted(part["run_id"]),
                      "seeds": len(part), "iterations": sorted(set(part["iteration"])),
                      "per_run": part[["run_id", "seed", "effective_depth", "effective_depth_layer",
                                       "effective_depth_literal", "effective_depth_literal_layer",
                                       "no_intermediate_collapse"]].to_dict("records"),
                      "last_layer": sorted(set(part["last_layer_index"].dropna().astype(int))),
                      "intermediate_collapse": len(collapsed),
                      "effective_depth": spread(collapsed["effective_depth"]),
                      "literal_measured": len(literal),
                      "literal_defined": int(literal["effective_depth_literal"].notna().sum()),
                      "effective_depth_literal": spread(literal["effective_depth_literal"])})
    return found


def depth_trend_findings(depth: pd.DataFrame) -> list[dict]:
    """Per swept key and family of recipes differing in that key only: the effective depth per value among
    the runs with an intermediate collapse, and a direction only where every value has some."""
    from figures.style import staged

    depth = depth[~staged(depth)] if len(depth) else depth  # as the figure: warm starts are another protocol
    if not len(depth):
        return []
    keys = [key for key in recipe_keys(depth) if depth[key].astype(str).nunique() > 1]
    found = []
    for key in keys:
        fixed = [other for other in keys if other != key]
        families = depth.groupby(fixed, dropna=False, sort=True) if fixed else [((), depth)]
        for held, family in families:
            if family[key].astype(str).nunique() < 2:
                continue
            held = held if isinstance(held, tuple) else (held,)
            found.append(trend(key, family, dict(zip(fixed, held))))
    return found


def trend(key: str, family: pd.DataFrame, held: dict) -> dict:
    """One effective_depth_trend finding (module docstring)."""
    values = []
    for value, part in family.groupby(key, sort=True):
        collapsed = part[~part["no_intermediate_collapse"]]
        values.append({"value": value, "runs": len(part), "intermediate_collapse": len(collapsed),
                       "effective_depth": spread(collapsed["effective_depth"]),
                       "effective_depth_literal": spread(part["effective_depth_literal"])})
    means = [entry["effective_depth"]["mean"] for entry in values]
    ranges = [(entry["effective_depth"]["min"], entry["effective_depth"]["max"]) for entry in values]
    pairs = list(zip(ranges, ranges[1:]))  # a rise (fall) is clean when each value's seeds all lie above (below)
    overlap = (any(before[1] >= after[0] for before, after in pairs) if means[-1] > means[0]
               else any(before[0] <= after[1] for before, after in pairs))
    if not any(entry["intermediate_collapse"] for entry in values):
        direction = "no intermediate collapse"
    elif not all(entry["intermediate_collapse"] == entry["runs"] for entry in values):
        direction = "not comparable"  # a mean over the runs that collapse would drop the others silently
    else:
        direction = ("rises" if all(a < b for a, b in zip(means, means[1:])) else
                     "falls" if all(a > b for a, b in zip(means, means[1:])) else
                     "unchanged" if len(set(means)) == 1 else "not monotone")
    return {"kind": "effective_depth_trend", "recipe": ", ".join(f"{name}={value}" for name, value in held.items())
            or "all runs", "key": key, "held": held, "values": values, "direction": direction,
            "seed_ranges_overlap": overlap,
            "runs": sorted(family["run_id"])}


# ---- learning phases -----------------------------------------------------------------------------------

def stop_findings(metrics: pd.DataFrame, tolerance: float = 0.05) -> list[dict]:
    """Per recipe: "stop pre-training here" from the seed-mean phases at the last hidden layer, its band,
    the seeds' spread and the classifier's best."""
    if not (metrics["metric"] == "reconstruction_mse").any():
        return []
    advice = stop_table(seed_phase_table(metrics, tolerance), by="recipe")
    found = []
    for _, row in advice.sort_values("recipe").iterrows():
        found.append({"kind": "stop_pretraining", "recipe": row["recipe"], "layer": row["read_at_layer"],
                      "runs": row["runs"].split(", ") if isinstance(row["runs"], str) else [],
                      "seeds": int(row["seeds"]) if row["seeds"] == row["seeds"] else 0,
                      "stop": row["transfer_peak"], "stop_low": row["transfer_peak_low"],
                      "stop_high": row["transfer_peak_high"],
                      "stop_seeds": {"min": row["transfer_peak_seed_min"], "max": row["transfer_peak_seed_max"],
                                     "found": int(row["transfer_peak_seeds"])},
                      "classifier_best": row["classifier_best"], "classifier_best_low": row["classifier_best_low"],
                      "classifier_best_high": row["classifier_best_high"],
                      "classifier_seeds": {"min": row["classifier_best_seed_min"],
                                           "max": row["classifier_best_seed_max"],
                                           "found": int(row["classifier_best_seeds"])},
                      "missing_reason": row["missing_reason"]})
    return found


# ---- plasticity ----------------------------------------------------------------------------------------

def final_accuracies(metrics: pd.DataFrame) -> dict:
    """run id -> the classifier's test accuracy at the run's last measured checkpoint."""
    accuracy = metrics[(metrics["metric"] == "classifier_accuracy") & (metrics["split"] == "test")]
    accuracy = accuracy[accuracy["layer_index"] == accuracy.groupby("run_id")["layer_index"].transform("max")]
    last = accuracy[accuracy["iteration"] == accuracy.groupby("run_id")["iteration"].transform("max")]
    return last.groupby("run_id")["value"].first().to_dict()


def children(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per warm-started child (the last stage, not a transfer child: figures/transfer.py's)."""
    from figures.style import staged, transferred

    runs = metrics.drop_duplicates("run_id")
    # the children of a parent with transfer children are that story's (its start from the end included)
    transfer_parents = set(runs.loc[transferred(runs), "parent_run_id"]) if "parent_run_id" in runs else set()
    in_transfer = runs["parent_run_id"].isin(transfer_parents) if transfer_parents else False
    return runs[staged(runs) & (runs["epochs"] > 0) & ~transferred(runs) & ~in_transfer]


def plasticity_findings(metrics: pd.DataFrame) -> list[dict]:
    """warm_start_gap per plain warm-start recipe, then intervention per reset/shrink-perturb recipe."""
    from figures.plasticity import protocol, scratch_twin
    from figures.style import settings_of

    if "pretrain_fraction" not in metrics:
        return []
    accuracy, labels, pairs = final_accuracies(metrics), recipe_labels(metrics), []
    for _, row in children(metrics).iterrows():
        settings = settings_of(row)
        plain = dataclasses.replace(settings, **INTERVENTION_DEFAULTS).run_id
        pairs.append({"run_id": row["run_id"], "recipe": labels[row["run_id"]], "protocol": protocol(row),
                      "seed": row["seed"], "plain": plain, "scratch": scratch_twin(row),
                      "accuracy": accuracy.get(row["run_id"], math.nan)})
    pairs = pd.DataFrame(pairs)
    if not len(pairs):
        return []
    pairs["gap"] = [accuracy.get(scratch, math.nan) - accuracy.get(plain, math.nan)
                    for scratch, plain in zip(pairs["scratch"], pairs["plain"])]
    pairs["recovered"] = [value - accuracy.get(plain, math.nan) for value, plain in zip(pairs["accuracy"], pairs["plain"])]
    plain = pairs[pairs["run_id"] == pairs["plain"]]
    found = [gap_finding(recipe, part, accuracy) for recipe, part in plain.groupby("recipe", sort=True)]
    interventions = pairs[pairs["run_id"] != pairs["plain"]]
    found += [intervention_finding(recipe, part, labels) for recipe, part in interventions.groupby("recipe", sort=True)]
    return found


def gap_finding(recipe: str, part: pd.DataFrame, accuracy: dict) -> dict:
    paired = part[part["gap"].notna()]
    return {"kind": "warm_start_gap", "recipe": recipe, "runs": sorted(part["run_id"]) + sorted(paired["scratch"]),
            "seeds": len(part), "paired": len(paired), "warm_accuracy": spread(part["accuracy"]),
            "scratch_accuracy": spread([accuracy[run] for run in paired["scratch"]]), "gap": spread(paired["gap"]),
            "worse": int((paired["gap"] > 0).sum())}


def intervention_finding(recipe: str, part: pd.DataFrame, labels: dict) -> dict:
    paired = part[part["recovered"].notna()]
    share = paired["recovered"] / paired["gap"].where(paired["gap"] > 0)
    return {"kind": "intervention", "recipe": recipe, "protocol": part["protocol"].iloc[0],
            "warm_recipe": labels.get(part["plain"].iloc[0], ""), "runs": sorted(part["run_id"]) + sorted(paired["plain"]),
            "seeds": len(part), "paired": len(paired), "accuracy": spread(part["accuracy"]),
            "recovered": spread(paired["recovered"]), "gap": spread(paired["gap"]), "share_of_gap": spread(share)}
