"""The demo, reduced (clean labels, one seed), end to end: train -> analysis -> figures -> report, and the
three stories' shapes read from the metrics table (not from the pictures)."""

import pandas as pd
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
REDUCED = ["experiment=demo", "label_noise=0", "seed=0", "threads=1", "progress=off"]


def final(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["iteration"] == rows.groupby("run_id")["iteration"].transform("max")]


def test_reduced_demo_shows_phases_collapse_and_the_warm_start_gap(tmp_path):
    words = [*REDUCED, f"out_dir={tmp_path}"]
    trained = run_cli("train.py", words, timeout=900)
    assert trained.returncode == 0, trained.stderr
    assert "6 run(s) of experiment 'demo' trained: 6 done" in trained.stdout  # 2 collapse + scratch, stage 1, 2 children
    analysed = run_cli("analysis.py", words, timeout=900)
    assert analysed.returncode == 0, analysed.stderr
    experiment = tmp_path / "demo"
    assert (experiment / "report.html").exists() and (experiment / "phases.csv").exists()
    for pattern in ("learning_phases_*_depth4_*", "ncc_by_layer", "cdnv_by_layer", "effective_depth", "heatmap_*",
                    "plasticity_curves", "warm_start_gap", "nc1_by_layer", "nc_over_training", "plasticity_diagnostics",
                    "cka_layers", "cka_convergence"):
        assert list((experiment / "figures").glob(f"{pattern}.png")), pattern
    metrics = pd.read_parquet(experiment / "metrics.parquet")
    from metrics.registry import METRICS

    assert set(metrics["metric"]) == set(METRICS)  # every metric, the neural-collapse suite and CKA included
    similarity = pd.read_parquet(experiment / "similarity.parquet")
    assert set(similarity["kind"]) == {"layers", "to_final"} and similarity["run_id"].nunique() == 6
    test = metrics[metrics["split"] == "test"].sort_values("iteration")

    # LearnPhase: the top hidden layer's reconstruction loss falls, then rises; its transfer probe rises, then falls.
    collapse = metrics[(metrics["depth"] == 4) & (metrics["pretrain_fraction"] == 0)]
    (run,) = collapse["run_id"].unique()
    top = test[(test["run_id"] == run) & (test["layer"] == "block03")]
    loss = top[top["metric"] == "reconstruction_mse"]["value"].to_numpy()
    assert loss.min() < loss[0] - 0.03 and loss[-1] > loss.min() + 0.2, loss
    assert loss.argmin() < len(loss) - 2  # the minimum comes well before the end
    transfer = top[top["metric"] == "transfer_accuracy"]["value"].to_numpy()
    assert transfer.max() > transfer[0] + 0.005 and transfer[-1] < transfer.max() - 0.1, transfer
    phases = pd.read_csv(experiment / "phases.csv")
    top_phases = phases[(phases["run_id"] == run) & (phases["layer"] == "block03")].iloc[0]
    assert top_phases["minimum"] < top_phases["rise"] <= top["iteration"].max()
    assert top_phases["transfer_peak"] < top_phases["classifier_best"]  # stop pre-training before the classifier is best

    # IntermediateNC: at the end of training, NCC train accuracy rises with the layer index.
    ncc = final(collapse[(collapse["metric"] == "ncc_accuracy") & (collapse["split"] == "train")])
    hidden = ncc[~ncc["layer"].isin(["input", "logits"])].sort_values("layer_index")["value"].to_numpy()
    assert hidden[-1] > hidden[0] + 0.3 and all(later >= earlier - 0.02 for earlier, later in zip(hidden, hidden[1:]))

    # Berariu et al.: warm start ends below scratch; resetting the last 2 modules closes the gap.
    accuracy = final(test[(test["metric"] == "classifier_accuracy") & (test["depth"] == 3)])
    by_protocol = {(row["pretrain_fraction"], row["reset_last"], row["epochs"]): row["value"]
                   for _, row in accuracy.iterrows()}
    scratch, warm, reset = by_protocol[(0.0, 0, 20)], by_protocol[(0.5, 0, 20)], by_protocol[(0.5, 2, 20)]
    assert scratch - warm > 0.05 and reset > warm + 0.05, by_protocol
