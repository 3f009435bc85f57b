"""python -m pytest tests/test_findings.py -q — findings/phases.py's tolerant turns on one curve, from small metrics
tables fabricated here (curves chosen so that the old rules would fail); the read-out over seeds is
tests/test_readout.py's."""

from __future__ import annotations

import math

import pandas as pd

from conf import Settings
from findings.phases import phase_table, reconstruction_turns, stop_table
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
    assert stop_table(phases, by="run_id").iloc[0]["stop_pretraining_at"] == 32


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
    assert math.isnan(stop_table(phase_table(fabricated_run(Settings(seed=0), probe=held)), by="run_id").iloc[0]["stop_pretraining_at"])


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
