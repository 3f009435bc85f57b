"""The IntermediateNC questions: each condition's ε-effective depth, and how it moves along a swept key.

    rows = depth_questions(metrics, runs)   # effective_depth per condition, effective_depth_trend per key and family

Galanti et al.'s own definition (metrics/depth.py effective_depth_literal): the first layer whose NCC train
error is at most ε, read per seed at the last checkpoint every seed of the condition has. It is an
intermediate collapse only at a layer below the output; at the output layer, or where no layer reaches
ε (label noise, an untrained net at chance), the condition has "no intermediate collapse", with the layer
named — never a depth. The lab's relative variant (within ε of the last layer's accuracy) always names
some layer, even for a net that never collapses, so no verdict rests on it.

A trend is read only along a numeric key, within a family of conditions that differ in that key alone, and
only where every arm collapses at an intermediate layer in every seed: the change from the lowest to the
highest value, paired by seed, with DEPTH_RESOLUTION (half a layer: depths are whole layers) as its
resolution. A categorical key (arch, optimizer) is listed side by side, with no direction.
"""

from __future__ import annotations

import pandas as pd

from findings import noise
from findings.rows import INTERMEDIATE, MIXED, NO_INTERMEDIATE, SIDE_BY_SIDE, finding, level_words
from findings.conditions import (distinguishing_keys, own_runs, condition_column, condition_labels, scope_words, setting_words,
                              varying_keys)

DEPTH_RESOLUTION = 0.5  # layers


def per_seed(literal: dict, ncc: dict, runs: list[str]) -> pd.DataFrame:
    """One row per run of a condition at the last checkpoint all of them have: `depth` (the paper's, NaN when no
    layer reaches ε), `layer` (its name), `last` (the output layer's index) and the best NCC train accuracy.
    `literal`, `ncc`: run id -> its effective_depth_literal rows, its NCC train accuracy rows."""
    runs = [run for run in runs if run in literal]
    shared = set.intersection(*(set(literal[run]["iteration"]) for run in runs)) if runs else set()
    if not shared:
        return pd.DataFrame()
    at, rows = max(shared), []
    for run in runs:
        layers = ncc.get(run, pd.DataFrame(columns=["iteration", "layer", "layer_index", "value"]))
        layers = layers[layers["iteration"] == at].sort_values("layer_index")
        names, value = list(layers["layer"]), float(literal[run].loc[literal[run]["iteration"] == at, "value"].iloc[0])
        best = layers.loc[layers["value"].idxmax()] if len(layers) else None
        rows.append({"run_id": run, "iteration": at, "depth": value, "last": len(names) - 1,
                     "layer": names[int(value)] if value == value and int(value) < len(names) else "",
                     "best_accuracy": best["value"] if best is not None else float("nan"),
                     "best_layer": best["layer"] if best is not None else ""})
    return pd.DataFrame(rows)


def depth_row(condition: str, seeds: pd.DataFrame, scope: str) -> dict:
    """The effective_depth row of one condition (module docstring)."""
    intermediate = seeds["depth"].notna() & (seeds["depth"] < seeds["last"])
    common = dict(scope=scope, unit="layer index", checkpoint=seeds["iteration"].iloc[0], runs=seeds["run_id"])
    estimate = noise.over_seeds(seeds["depth"].where(intermediate), DEPTH_RESOLUTION)
    if intermediate.all():
        layers = ", ".join(sorted(set(seeds["layer"])))
        return finding("effective_depth", condition, estimate, INTERMEDIATE,
                       f"intermediate collapse at {layers}: effective depth {level_words(seeds['depth'])}",
                       layer=layers, **common)
    at_output = seeds[seeds["depth"] == seeds["last"]]
    undefined = seeds[seeds["depth"].isna()]
    parts = ([f"the paper's ε-effective depth is the output layer ({', '.join(sorted(set(at_output['layer'])))}) "
              f"in {len(at_output)} of {len(seeds)} seeds"] if len(at_output) else [])
    if len(undefined):
        best = undefined.loc[undefined["best_accuracy"].idxmax()]
        parts.append(f"no layer reaches NCC train error ≤ ε in {len(undefined)} of {len(seeds)} seeds (best NCC "
                     f"train accuracy {best['best_accuracy']:.3g}, at {best['best_layer']})")
    if intermediate.any():
        return finding("effective_depth", condition, estimate, MIXED,
                       f"{int(intermediate.sum())} of {len(seeds)} seeds collapse at an intermediate layer; "
                       + "; ".join(parts) + ": no depth stated", **common)
    return finding("effective_depth", condition, None, NO_INTERMEDIATE, "no intermediate collapse: " + "; ".join(parts),
                   **common)


def depth_questions(metrics: pd.DataFrame, runs: pd.DataFrame) -> list[dict]:
    """effective_depth per condition of the runs that trained from their own start, then the trends."""
    own = own_runs(runs)
    own = own[own["run_id"].isin(metrics.loc[metrics["metric"] == "effective_depth_literal", "run_id"])]
    if not len(own):
        return []
    labels = condition_labels(own_runs(runs), runs)  # the phases' labels: one name per condition in every question
    chosen = metrics[metrics["run_id"].isin(own["run_id"])]
    literal = dict(tuple(chosen.loc[chosen["metric"] == "effective_depth_literal", ["run_id", "iteration", "value"]]
                         .groupby("run_id")))
    ncc = chosen[(chosen["metric"] == "ncc_accuracy") & (chosen["split"] == "train")]
    ncc = dict(tuple(ncc[["run_id", "iteration", "layer", "layer_index", "value"]].groupby("run_id")))
    rows, levels = [], {}
    for condition, part in own.groupby(own["run_id"].map(labels), sort=True):
        seeds = per_seed(literal, ncc, list(part["run_id"]))
        if len(seeds):
            rows.append(depth_row(condition, seeds, scope_words(part, runs)))
            levels[condition] = (rows[-1]["verdict"], seeds.assign(seed=seeds["run_id"].map(part.set_index("run_id")["seed"])))
    scratch = own[own["kind"] == "scratch"]  # a stage-1 parent trains on a subset: another protocol
    return rows + trend_rows(scratch, labels, levels)


def trend_rows(runs: pd.DataFrame, labels: dict, levels: dict) -> list[dict]:
    """One effective_depth_trend row per swept key and family of conditions that differ in that key alone."""
    rows, keys, named = [], varying_keys(runs), distinguishing_keys(runs)
    for key in keys:
        fixed = [other for other in keys if other != key]
        families = (runs.groupby([condition_column(runs, other) for other in fixed], dropna=False, sort=True) if fixed
                    else [((), runs)])  # imported_from as imported or not: two imports of one condition are its seeds
        for _, family in families:
            family = family[family[key].notna()]  # null (an unknown lr, a size the arch does not take) has no place on it
            if family[key].astype(str).nunique() > 1:
                # named by the other keys that tell conditions apart (every other key is held too: the family's)
                held = setting_words(family.iloc[0], [name for name in named if name != key])
                rows.append(trend_row(key, f"along {key}" + (f" at {held}" if held else ""), family, labels, levels))
    return rows


def numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def trend_row(key: str, condition: str, family: pd.DataFrame, labels: dict, levels: dict) -> dict:
    """Effective depth along `key` within one family (module docstring)."""
    arms = []
    for value, part in family.groupby(key, sort=True):
        verdict, seeds = levels.get(labels[part["run_id"].iloc[0]], ("undefined", pd.DataFrame()))
        arms.append((value, verdict, seeds))
    listed = "; ".join(f"{key}={value}: " + (level_words(seeds["depth"]) if verdict == INTERMEDIATE else verdict)
                       for value, verdict, seeds in arms)
    common = dict(key=key, unit="layers", runs=family["run_id"])
    if not numeric(family[key]):
        return finding("effective_depth_trend", condition, None, SIDE_BY_SIDE,
                       f"effective depth by {key} (categorical, no direction): {listed}", **common)
    undefined = [str(value) for value, verdict, _ in arms if verdict != INTERMEDIATE]
    if undefined:
        return finding("effective_depth_trend", condition, None, noise.UNDEFINED,
                       f"no trend with {key}: not every seed collapses at an intermediate layer at {key}="
                       f"{', '.join(undefined)} ({listed})", reason="not every arm defined", **common)
    (low_value, _, low), (high_value, _, high) = arms[0], arms[-1]
    change = high.set_index("seed")["depth"] - low.set_index("seed")["depth"]
    estimate = noise.over_seeds(change.dropna(), DEPTH_RESOLUTION)
    words = {noise.HIGHER: f"effective depth rises with {key}", noise.LOWER: f"effective depth falls with {key}",
             noise.NO_DIFFERENCE: f"no measurable change of effective depth with {key}",
             noise.ONE_SEED: f"effective depth along {key} (1 seed: no direction stated)"}.get(estimate.verdict,
                                                                                         f"no trend with {key}")
    return finding("effective_depth_trend", condition, estimate, estimate.verdict,
                   f"{words}: {key}={low_value} → {high_value} changes it by {estimate.words('layers')} ({listed})",
                   checkpoint=low["iteration"].iloc[0], **common)
