"""python -m pytest tests/test_findings.py -q — figures/phases.py's tolerant turns and figures/findings.py's
findings, from small metrics tables fabricated here (curves chosen so that the old rules would fail)."""

from __future__ import annotations

import math

import pandas as pd

from conf import Settings
from figures.findings import depth_table, findings, sentence
from figures.phases import phase_table, reconstruction_turns, seed_phase_table, stop_table
from metrics.depth import effective_depth, effective_depth_literal
from tests.fabricate import run_frame

ITERATIONS = [0, 1, 2, 4, 8, 16, 32, 64, 128]
LAYERS = ["input", "block00", "block01", "logits"]
RECONSTRUCTION = [1.0, 1.0, 0.99, 0.9, 0.7, 0.5, 0.45, 0.6, 0.8]  # flat, falling, rising
PROBE = [0.30, 0.31, 0.31, 0.33, 0.36, 0.38, 0.40, 0.37, 0.33]  # rises to 32, falls
CLASSIFIER = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
COLLAPSED = [0.3, 0.995, 1.0, 1.0]  # NCC train accuracy per layer: collapse from block00 on
NOT_COLLAPSED = [0.3, 0.5, 0.7, 0.9]  # only the logits reach the last layer's accuracy


def fabricated_run(settings: Settings, reconstruction=RECONSTRUCTION, probe=PROBE, ncc=COLLAPSED, stage: int = 1,
                   parent: str = "", iterations=ITERATIONS, final_accuracy: float | None = None) -> pd.DataFrame:
    """One run's rows: reconstruction and probe curves of block01, the classifier's accuracy, the NCC train
    accuracy per layer and both effective depths (ε = 0.01) computed from it, at every checkpoint."""
    rows = []
    for position, iteration in enumerate(iterations):
        accuracy = CLASSIFIER[position] if final_accuracy is None or position < len(iterations) - 1 else final_accuracy
        rows += [{"iteration": iteration, "layer": "block01", "layer_index": 2, "metric": "reconstruction_mse",
                  "split": "test", "value": reconstruction[position]},
                 {"iteration": iteration, "layer": "block01", "layer_index": 2, "metric": "transfer_accuracy",
                  "split": "test", "value": probe[position]},
                 {"iteration": iteration, "layer": "logits", "layer_index": 3, "metric": "classifier_accuracy",
                  "split": "test", "value": accuracy}]
        rows += [{"iteration": iteration, "layer": layer, "layer_index": index, "metric": "ncc_accuracy",
                  "split": "train", "value": ncc[index]} for index, layer in enumerate(LAYERS)]
        rows += [{"iteration": iteration, "layer": "all", "layer_index": -1, "metric": "effective_depth",
                  "split": "train", "value": float(effective_depth(ncc, 0.01))},
                 {"iteration": iteration, "layer": "all", "layer_index": -1, "metric": "effective_depth_literal",
                  "split": "train", "value": effective_depth_literal(ncc, 0.01)}]
    return run_frame(rows, settings, stage, parent)


def test_the_transfer_peak_ignores_an_early_spike():
    spiked = [0.30, 0.45, 0.31, 0.33, 0.36, 0.38, 0.40, 0.37, 0.33]  # noise at iteration 1 above the real peak
    assert max(range(9), key=spiked.__getitem__) == 1  # a real test: the old argmax stops at iteration 1
    phases = phase_table(fabricated_run(Settings(seed=0), probe=spiked))
    row = phases.iloc[0]
    assert row["transfer_peak"] == 32 and row["transfer_peak_low"] > 1 and row["transfer_peak_high"] == 32
    assert stop_table(phases).iloc[0]["stop_pretraining_at"] == 32


def test_a_probe_that_never_falls_has_no_peak_and_says_why():
    rising = [0.30, 0.31, 0.32, 0.34, 0.36, 0.38, 0.40, 0.42, 0.44]
    row = phase_table(fabricated_run(Settings(seed=0), probe=rising)).iloc[0]
    assert math.isnan(row["transfer_peak"]) and "does not fall" in row["missing_reason"]
    assert row["minimum"] == 32  # the reconstruction's phases are still there


def test_a_probe_that_holds_then_falls_has_no_peak_and_says_why():
    # the demo's top block: a rise of 0.015 above the start, inside τ (5 % of the 0.40 range), then a fall
    held = [0.900, 0.915, 0.905, 0.912, 0.910, 0.800, 0.600, 0.520, 0.500]
    row = phase_table(fabricated_run(Settings(seed=0), probe=held)).iloc[0]
    assert math.isnan(row["transfer_peak"]) and "never rises more than" in row["missing_reason"]
    assert math.isnan(stop_table(phase_table(fabricated_run(Settings(seed=0), probe=held))).iloc[0]["stop_pretraining_at"])


def test_an_early_spike_in_the_reconstruction_loss_no_longer_hides_the_phases():
    low_start = [0.5, 1.0, 1.0, 0.98, 0.9, 0.7, 0.6, 0.65, 0.8]  # iteration 0 far below the plateau
    assert min(low_start[1:]) > low_start[0] - 0.05 * (1.0 - 0.5)  # the old rule: never falls below the start
    turns = reconstruction_turns(ITERATIONS, low_start, tolerance=0.05)
    assert (turns["plateau_end"], turns["minimum"], turns["rise"]) == (4, 32, 64), turns
    assert turns["minimum_low"] <= 32 <= turns["minimum_high"] and not turns["reasons"]
    high_spike = [1.0, 3.0, 1.0, 0.98, 0.9, 0.7, 0.6, 0.65, 0.8]  # a spike at iteration 1 is not the plateau's end
    turns = reconstruction_turns(ITERATIONS, high_spike, tolerance=0.05)
    assert turns["plateau_end"] >= 4 and turns["minimum"] == 32
    dipped = [1.0, 1.0, 0.2, 1.0, 0.99, 0.7, 0.6, 0.65, 0.8]  # a one-checkpoint dip does not end the plateau
    assert reconstruction_turns(ITERATIONS, dipped, tolerance=0.05)["plateau_end"] >= 4


def test_a_rise_that_falls_back_at_the_end_is_a_rise_not_held():
    # the last checkpoint dips back to the minimum: the rise happened (128) but was not held to the end
    fell_back = [1.0, 1.0, 1.0, 0.98, 0.9, 0.7, 0.6, 0.6, 0.8, 0.8, 0.61]
    turns = reconstruction_turns([*ITERATIONS, 256, 512], fell_back, tolerance=0.05)
    assert (turns["minimum"], turns["rise"]) == (32, 128) and math.isnan(turns["rise_held"])
    assert any("falls back" in reason for reason in turns["reasons"])


def test_a_net_without_intermediate_collapse_says_so():
    metrics = pd.concat([fabricated_run(Settings(depth=depth, seed=seed), ncc=NOT_COLLAPSED)
                         for depth in (2, 4) for seed in (0, 1)], ignore_index=True)
    depth = depth_table(metrics)
    assert (depth["effective_depth"] == 3).all() and depth["no_intermediate_collapse"].all()
    assert depth["effective_depth_literal"].isna().all()  # no layer has NCC train error <= 0.01
    found = findings(metrics)
    per_recipe = [finding for finding in found if finding["kind"] == "effective_depth"]
    assert len(per_recipe) == 2 and all("no intermediate collapse" in sentence(finding) for finding in per_recipe)
    assert all("undefined" in sentence(finding) for finding in per_recipe)
    (trend,) = [finding for finding in found if finding["kind"] == "effective_depth_trend"]
    assert trend["key"] == "depth" and trend["direction"] == "no intermediate collapse"
    assert "no effect of depth" in sentence(trend) and "rises" not in sentence(trend)
    from figures.finding_sentences import headed_sentences
    from figures.report import findings_section

    report = findings_section(headed_sentences(found))  # what the report's Findings show, first
    assert "<h3>Effective depth (IntermediateNC)</h3>" in report and report.count("no intermediate collapse") >= 3


def test_the_findings_carry_both_definitions_of_effective_depth():
    """NCC train accuracies [0.3, 0.995, 1.0, 1.0], ε = 0.01: by hand, block00 (index 1) has error 0.005 <= ε
    and is within ε of the last layer's 1.0: both definitions give 1; [0.3, 0.98, 0.985, 0.99] gives 1 against
    the last layer (0.98 >= 0.99 − 0.01) but 3 by the paper's (only the logits' error 0.01 <= 0.01)."""
    metrics = pd.concat([fabricated_run(Settings(width=16, seed=0)),
                         fabricated_run(Settings(width=64, seed=0), ncc=[0.3, 0.98, 0.985, 0.99])], ignore_index=True)
    depth = depth_table(metrics).set_index("width")
    assert (depth.loc[16, "effective_depth"], depth.loc[16, "effective_depth_literal"]) == (1.0, 1.0)
    assert (depth.loc[64, "effective_depth"], depth.loc[64, "effective_depth_literal"]) == (1.0, 3.0)
    assert depth.loc[64, "effective_depth_literal_layer"] == "logits" and not depth.loc[64, "no_intermediate_collapse"]
    words = [sentence(finding) for finding in findings(metrics) if finding["kind"] == "effective_depth"]
    assert all("1 run, no spread" in text for text in words), words


def test_seed_mean_phases_with_their_spread():
    shifted = {0: PROBE, 1: PROBE, 2: [0.30, 0.31, 0.31, 0.33, 0.36, 0.41, 0.38, 0.35, 0.33]}  # seed 2 peaks at 16
    metrics = pd.concat([fabricated_run(Settings(seed=seed), probe=probe) for seed, probe in shifted.items()],
                        ignore_index=True)
    (row,) = seed_phase_table(metrics).itertuples()
    assert row.seeds == 3 and row.transfer_peak_seeds == 3
    assert (row.transfer_peak_seed_min, row.transfer_peak_seed_max) == (16, 32)
    assert row.transfer_peak in (16, 32) and row.transfer_peak_low <= 16 and row.transfer_peak_high >= 16
    assert row.minimum == 32 and row.classifier_best == 128
    (stop,) = [finding for finding in findings(metrics) if finding["kind"] == "stop_pretraining"]
    text = sentence(stop)
    assert "mean of 3 seeds' curves" in text and "span 16–32" in text and "before" in text, text
    one = [finding for finding in findings(fabricated_run(Settings(seed=0))) if finding["kind"] == "stop_pretraining"]
    assert "1 seed, no spread" in sentence(one[0]) and "iteration 32" in sentence(one[0])


def warm_start_grid(train_subset: int, gap: float, recovered: float) -> list[pd.DataFrame]:
    """Per seed 0, 1: scratch, its stage-1 parent, a plain warm start `gap` below scratch and a reset-2 child
    `recovered` above the warm start, all of one data size."""
    from conf.plasticity import parent_settings

    frames = []
    for seed in (0, 1):
        scratch = 0.9 + 0.01 * seed
        frames.append(fabricated_run(Settings(train_subset=train_subset, seed=seed, epochs=4), final_accuracy=scratch))
        for reset, accuracy in ((0, scratch - gap), (2, scratch - gap + recovered)):
            child = Settings(train_subset=train_subset, seed=seed, epochs=4, pretrain_fraction=0.5, pretrain_epochs=4,
                             reset_last=reset)
            parent = parent_settings(child)
            if reset == 0:
                frames.append(fabricated_run(parent, iterations=ITERATIONS[:6]))
            frames.append(fabricated_run(child, stage=2, parent=parent.run_id, final_accuracy=accuracy,
                                         iterations=[16 + step for step in ITERATIONS]))
    return frames


def test_findings_never_pool_two_recipes():
    metrics = pd.concat(warm_start_grid(1000, gap=0.10, recovered=0.05) + warm_start_grid(0, gap=0.02, recovered=0.0),
                        ignore_index=True)
    found = findings(metrics)
    gaps = {finding["recipe"]: finding for finding in found if finding["kind"] == "warm_start_gap"}
    assert len(gaps) == 2 and all(finding["seeds"] == 2 for finding in gaps.values())
    by_size = {"train_subset=1000" in recipe: finding for recipe, finding in gaps.items()}
    assert math.isclose(by_size[True]["gap"]["mean"], 0.10) and math.isclose(by_size[False]["gap"]["mean"], 0.02)
    assert not set(by_size[True]["runs"]) & set(by_size[False]["runs"])
    interventions = {"train_subset=1000" in finding["recipe"]: finding for finding in found
                     if finding["kind"] == "intervention"}
    assert math.isclose(interventions[True]["share_of_gap"]["mean"], 0.5)
    assert math.isclose(interventions[False]["recovered"]["mean"], 0.0, abs_tol=1e-12)
    assert "50% of the warm-start gap" in sentence(interventions[True])
    assert "worse in 2 of 2" in sentence(by_size[True])
    for kind in ("effective_depth", "stop_pretraining"):  # one finding per recipe, each of one data size
        recipes = [finding["recipe"] for finding in found if finding["kind"] == kind]
        assert len(recipes) == len(set(recipes))
    runs = pd.DataFrame({"run_id": sorted(metrics["run_id"].unique()), "state": "done"})
    runs.loc[0, "state"] = "running"
    marked = [finding for finding in findings(metrics, runs) if finding.get("unfinished")]
    assert marked and all("not done" in sentence(finding) for finding in marked)
