"""Representation similarity (metrics/similarity.py, measuring/snapshots.py, measuring/similarity.py) and NC3
(metrics/collapse.py): CKA against float64 NumPy references written from the papers' formulas, the probe
snapshot end to end (written, exported, compared, measured again when lost), and the CKA figures."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import analysis
from conf.analysis import Analysis
from folders import ExperimentFolder
from measuring import snapshots
from measuring.layout import StoreLayout
from metrics import engine
from metrics.collapse import self_duality
from metrics.similarity import cka_vectors, linear_cka, probe_subset
from tests.conftest import copied, run_cli, tiny_words
from tests.fabricate import class_images, fabricated_similarity, keyed, tiny_mlp

RUN = ["image_size=8", "depth=1", "width=4", "epochs=2", "synthetic_train_size=128"]
QUICK = ["probe_dimensions=32", "log_level=WARNING", "figures=false"]


def reference_linear_cka(first: np.ndarray, second: np.ndarray) -> float:
    """Kornblith et al.'s feature-space form, float64: ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) of centred X, Y."""
    x, y = first - first.mean(axis=0), second - second.mean(axis=0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def reference_unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. (JMLR 2012), eq. 5: the U-statistic HSIC from Grams with a zeroed diagonal."""
    n = len(k)
    k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    ones = np.ones(n)
    return (np.trace(k @ l) + (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * ones @ k @ l @ ones) / (n * (n - 3))


def reference_debiased_cka(first: np.ndarray, second: np.ndarray) -> float:
    k, l = first @ first.T, second @ second.T
    return reference_unbiased_hsic(k, l) / math.sqrt(reference_unbiased_hsic(k, k) * reference_unbiased_hsic(l, l))


def float16_features(seed: int, examples: int, dimensions: int, mixing: np.ndarray | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(examples, dimensions)) * rng.uniform(0.2, 3, size=dimensions) + rng.normal(size=dimensions)
    return (values if mixing is None else values @ mixing).astype(np.float16)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cka_and_debiased_cka_equal_float64_references(seed):
    first = float16_features(seed, 200, 40)
    second = (first.astype(np.float64) @ np.random.default_rng(seed + 10).normal(size=(40, 25))
              + np.random.default_rng(seed + 20).normal(size=(200, 25))).astype(np.float16)
    a, b = torch.from_numpy(first), torch.from_numpy(second)
    expected = reference_linear_cka(first.astype(np.float64), second.astype(np.float64))
    assert linear_cka(a, b) == pytest.approx(expected, rel=1e-5)
    debiased = float(cka_vectors(a)[1] @ cka_vectors(b)[1])
    assert debiased == pytest.approx(reference_debiased_cka(first.astype(np.float64), second.astype(np.float64)),
                                     rel=1e-5, abs=1e-6)
    assert 0 < debiased < expected < 1  # the bias of the plain estimator is upward (Nguyen et al. 2021)


def test_cka_is_one_for_identical_rotated_or_scaled_layers_and_undefined_for_a_constant_one():
    features = float16_features(3, 150, 20)
    rotation, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(20, 20)))
    same = torch.from_numpy(features)
    turned = torch.from_numpy((features.astype(np.float64) @ rotation * 7.5 + 3).astype(np.float32))
    assert linear_cka(same, same) == pytest.approx(1, abs=1e-12)
    assert linear_cka(same, turned) == pytest.approx(1, abs=1e-5)  # invariant to rotation, scale and shift
    assert math.isnan(linear_cka(same, torch.ones(150, 4)))  # a constant layer has no variance to compare


def test_the_probe_subset_is_sorted_fixed_and_shared_by_every_run():
    subset = probe_subset(5000, 1024)
    assert len(subset) == 1024 and (subset[1:] > subset[:-1]).all() and int(subset.max()) < 5000
    assert torch.equal(subset, probe_subset(5000, 1024))  # never the run's seed: runs are comparable
    assert torch.equal(probe_subset(300, 1024), torch.arange(300))  # a smaller test split: all of it


def test_the_engine_snapshot_and_cka_previous_layer_match_the_references():
    train, test = class_images(300, 3, 0), class_images(120, 3, 1)
    model = tiny_mlp()
    options = Analysis(metrics="cka_previous_layer", probe_subset_size=50)
    rows, layers = engine.measure_layers(model, train, test, 3, options, seed=0)
    rows_indices = probe_subset(120, 50)
    with torch.no_grad():
        features = model.features(engine.data.normalize(test.images, test.mean, test.std)[rows_indices])
    previous = None
    for name in ["input", "block00", "logits"]:
        snapshot = layers[name].statistics["probe_snapshot"].features
        pooled = engine.Batch("test", features[name], None, {}, {}, 512).pooled  # the probes' pooling
        assert torch.equal(snapshot, pooled.to(torch.float16))
        if previous is not None:
            expected = reference_linear_cka(previous.double().numpy(), snapshot.double().numpy())
            assert keyed(rows)[(name, "cka_previous_layer", "test")] == pytest.approx(expected, rel=1e-5)
        previous = snapshot
    assert ("input", "cka_previous_layer", "test") not in keyed(rows)


def test_nc3_equals_a_float64_reference_and_is_zero_when_the_classifier_is_the_class_means():
    train, test = class_images(300, 3, 0), class_images(120, 3, 1)
    model = tiny_mlp().eval()  # the engine measures in eval mode (BatchNorm's running statistics)
    inputs = model.features(engine.data.normalize(train.images, train.mean, train.std))["block00"].double().detach()
    labels = train.labels.numpy()
    means = np.stack([inputs.numpy()[labels == c].mean(axis=0) for c in range(3)])
    offsets = means - inputs.numpy().mean(axis=0)
    weight = model.head.weight.detach().double().numpy()
    expected = np.sum((weight / np.linalg.norm(weight) - offsets / np.linalg.norm(offsets)) ** 2)
    values = keyed(engine.measure(model, train, test, 3, Analysis(metrics="nc3_self_duality"), seed=0))
    assert values[("logits", "nc3_self_duality", "train")] == pytest.approx(expected, rel=1e-9)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(offsets * 3.0))  # W ∝ Mᵀ: Papyan et al.'s self-duality
    values = keyed(engine.measure(model, train, test, 3, Analysis(metrics="nc3_self_duality"), seed=0))
    assert values[("logits", "nc3_self_duality", "train")] == pytest.approx(0, abs=1e-12)
    assert values[("logits", "nc3_self_duality", "test")] > 1e-6  # the test split's means are its own


def test_nc3_is_nan_with_one_present_class():
    sums, counts = torch.zeros(3, 4, dtype=torch.float64), torch.tensor([5.0, 0.0, 0.0], dtype=torch.float64)
    assert math.isnan(self_duality(torch.randn(3, 4), sums, counts))


@pytest.fixture(scope="module")
def measured_pair(tmp_path_factory):
    """Two runs (seeds 0 and 1: their weights differ from the start) trained and measured once per module."""
    out_dir = tmp_path_factory.mktemp("pair")
    assert run_cli("train.py", tiny_words(out_dir, *RUN, "seed=0,1")).returncode == 0
    assert analysis.main([f"out_dir={out_dir}", *QUICK]) == 0
    return out_dir


@pytest.fixture
def measured(measured_pair, tmp_path):
    """This test's own copy of the measured pair."""
    return copied(measured_pair, tmp_path)


def test_snapshots_the_similarity_table_and_the_export_agree(measured, in_process):
    experiment = measured / "default"
    table = pd.read_parquet(experiment / "similarity.parquet")
    run_dir = sorted((experiment / "runs").iterdir())[0]
    out = measured / "probe.npz"
    completed = in_process("analysis.py", ["features", str(run_dir), "iteration=8", "subset=probe",
                                           "probe_dimensions=32", f"out={out}"])
    assert completed.returncode == 0, completed.stderr
    exported = np.load(out)
    assert len(exported["indices"]) == 64  # the whole tiny test split (probe_subset_size 1024 > 64)
    final = np.load(measured / "probe.npz")
    rows = table[(table["run_id"] == run_dir.name) & (table["iteration"] == 8) & (table["comparison"] == "layers")]
    for _, row in rows.iterrows():
        first, second = (final[name].astype(np.float64) for name in (row["layer"], row["other_layer"]))
        assert row["cka"] == pytest.approx(reference_linear_cka(first, second), rel=1e-4, abs=1e-6)
    diagonal = rows[rows["layer"] == rows["other_layer"]]
    assert np.allclose(diagonal["cka"], 1) and np.allclose(diagonal["cka_debiased"], 1)
    to_final = table[(table["run_id"] == run_dir.name) & (table["comparison"] == "to_final")]
    assert set(to_final["iteration"]) == {0, 1, 2, 4, 8} and (to_final["other_iteration"] == 8).all()
    assert np.allclose(to_final[to_final["iteration"] == 8]["cka"], 1)
    assert {"depth", "seed"} <= set(table.columns)


def test_similarity_compares_two_runs_and_a_run_with_itself(measured, in_process):
    first, second = sorted((measured / "default" / "runs").iterdir())
    out, under = measured / "cka.csv", "options=probe_dimensions=32"  # the snapshots QUICK measured
    refused = in_process("analysis.py", ["similarity", str(first), str(first), "options="])  # the defaults': none taken
    assert refused.returncode == 2 and "it has snapshots under options=probe_dimensions=32" in refused.stderr
    alone = in_process("analysis.py", ["similarity", str(first), str(second)])  # auto: the one set both runs have
    assert alone.returncode == 0 and "snapshots under probe_dimensions=32:" in alone.stdout, alone.stderr
    completed = in_process("analysis.py", ["similarity", str(first), str(first), f"out={out}", under])
    assert completed.returncode == 0, completed.stderr
    itself = pd.read_csv(out)
    assert np.allclose(itself["cka"], 1) and set(itself["iteration"]) == {0, 1, 2, 4, 8}
    completed = in_process("analysis.py", ["similarity", str(first), str(second), f"out={out}", under])
    other = pd.read_csv(out)
    assert completed.returncode == 0 and (other[other["layer"] != "input"]["cka"] < 1 - 1e-6).all()
    assert "block00" in completed.stdout
    for words, message in ((["similarity", str(first)], "similarity needs RUN_DIR_A RUN_DIR_B"),
                           (["similarity", str(first), str(second), "align=epoch"], "align='epoch'"),
                           (["similarity", str(first), str(measured), under], "not a run folder")):
        completed = in_process("analysis.py", words)
        assert completed.returncode == 2 and message in completed.stderr
        assert len(completed.stderr.strip().splitlines()) == 1


def test_a_lost_corrupt_or_other_version_snapshot_is_measured_again_alone(measured, monkeypatch):
    metrics_dir = measured / "default" / "metrics"
    run_id = sorted(path.name for path in metrics_dir.iterdir())[0]
    layout = StoreLayout(ExperimentFolder(measured / "default"))  # QUICK's snapshots: taken under probe_dimensions=32
    lost, corrupt, other = (layout.snapshot_path(run_id, iteration, "probe_dimensions=32") for iteration in (4, 8, 2))
    lost.unlink()
    corrupt.write_bytes(b"not a zip")
    taken = snapshots.read_snapshot(other)
    with monkeypatch.context() as patch:  # the same snapshot, written as another SNAPSHOT_VERSION
        patch.setattr(snapshots, "SNAPSHOT_VERSION", snapshots.SNAPSHOT_VERSION + 1)
        snapshots.write_snapshot(other, taken)
    asked = []
    original = engine.measure_layers
    monkeypatch.setattr(engine, "measure_layers", lambda *a, **k: asked.append(k["metrics"]) or original(*a, **k))
    assert analysis.main([f"out_dir={measured}", *QUICK]) == 0
    assert asked == [["cka_previous_layer"]] * 3
    assert lost.exists() and np.load(corrupt)["layer:block00"].dtype == np.float16
    assert snapshots.read_snapshot(other).iteration == 2  # taken again under the current version
    assert analysis.main([f"out_dir={measured}", *QUICK]) == 0 and len(asked) == 3  # fresh now: nothing again


def test_the_cka_figures_render_from_a_similarity_table_and_skip_without_one(tmp_path):
    from figures import draw_all

    drawn, skipped = draw_all(pd.DataFrame({"metric": []}), tmp_path, ["cka_layers", "cka_convergence"],
                              similarity_table=fabricated_similarity())
    assert set(drawn) == {"cka_layers", "cka_convergence"} and not skipped
    assert all(path.stat().st_size > 1000 for paths in drawn.values() for path in paths)
    drawn, skipped = draw_all(pd.DataFrame({"metric": []}), tmp_path, ["cka_layers"], similarity_table=None)
    assert not drawn and "snapshots" in skipped["cka_layers"]


def test_the_cka_figures_say_their_features_are_pooled():
    """The snapshots keep pooled features (at most probe_dimensions), not Kornblith et al.'s full flattened ones,
    and the two differ: every colour bar and title says pooled."""
    import matplotlib.pyplot as pyplot

    from figures import FIGURES

    for name in ("cka_layers", "cka_convergence"):
        for drawing in FIGURES[name].draw(fabricated_similarity()).values():
            labels = [axis.get_ylabel() for axis in drawing.axes if "CKA" in axis.get_ylabel()]
            assert labels and all("pooled" in label for label in labels), (name, labels)
            assert "pooled" in drawing.get_suptitle(), name
            pyplot.close(drawing)


def test_probe_subset_size_zero_keeps_no_snapshot_and_measures_nothing_twice(one_run_trained, tmp_path, monkeypatch):
    out_dir = copied(one_run_trained, tmp_path)  # one RUN run, trained once per session, not measured
    words = [f"out_dir={out_dir}", *QUICK, "probe_subset_size=0"]
    assert analysis.main(words) == 0
    experiment = out_dir / "default"
    assert not list(experiment.rglob("*.snapshot.npz"))
    assert "cka_previous_layer" not in set(pd.read_parquet(experiment / "metrics.parquet")["metric"])
    asked = []
    original = engine.measure_layers
    monkeypatch.setattr(engine, "measure_layers", lambda *a, **k: asked.append(k["metrics"]) or original(*a, **k))
    assert analysis.main(words) == 0 and asked == []  # nothing is missing: no snapshot was asked for
