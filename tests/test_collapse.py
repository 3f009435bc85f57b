"""python -m pytest tests/test_collapse.py -q — neural collapse per layer (metrics/collapse.py): NC1 streamed
through C × C matrices against the direct D × D formula, NC2 against NumPy and on a simplex ETF, NC4's
agreement count, and the three through the engine. Each against a float64 NumPy reference written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import metrics.collapse  # registers the statistics and metrics (metrics/registry.py does not import it yet)
from conf.analysis import Analysis
from metrics import engine
from metrics.collapse import (NearestCentreAgreement, WithinClassProjection, class_mean_geometry, nc4_ncc_agreement,
                              within_over_between)
from metrics.moments import ClassMoments
from metrics.registry import METRICS, LayerResults
from metrics.statistics import Batch, ClassStatistics, Context, NearestCentre
from tests.fabricate import ENGINE_MEAN, ENGINE_STD, class_images, tiny_mlp

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py

UNEVEN = (7, 50, 1, 33, 0, 19, 64, 5)  # batch sizes: uneven, one of a single example, one empty


# ---- float64 NumPy references --------------------------------------------------------------------------------

def numpy_nc1(features, labels, means=None) -> float:
    """tr(Σ_W Σ_B⁺) / C as Papyan et al. write it, with D × D matrices; present classes only. `means`
    {class: mean}: Σ_W about these instead of the exact class means (to show what rounding them costs)."""
    x, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
    classes = np.unique(labels)
    exact = {c: x[labels == c].mean(axis=0) for c in classes}
    centred = x - np.stack([(exact if means is None else means)[label] for label in labels])
    within = centred.T @ centred / len(x)
    offsets = np.stack([exact[c] for c in classes]) - x.mean(axis=0)
    between = offsets.T @ offsets / len(classes)
    # Σ_B has rank ≤ C − 1: its null eigenvalues come out at ~1e-16 of the largest, the others far above 1e-10.
    return float(np.trace(within @ np.linalg.pinv(between, rcond=1e-10)) / len(classes))


def numpy_geometry(features, labels) -> dict[str, float]:
    """NC2 from the samples: class means centred on the mean over samples, present classes only."""
    x, labels = np.asarray(features, dtype=np.float64), np.asarray(labels)
    classes = np.unique(labels)
    offsets = np.stack([x[labels == c].mean(axis=0) for c in classes]) - x.mean(axis=0)
    norms = np.linalg.norm(offsets, axis=1)
    cosines = [offsets[i] @ offsets[j] / (norms[i] * norms[j])
               for i in range(len(classes)) for j in range(len(classes)) if i != j]
    return {"equinorm": norms.std() / norms.mean(), "equiangularity": float(np.std(cosines)),
            "etf_distance": float(np.mean(np.abs(np.array(cosines) + 1 / (len(classes) - 1))))}


def clustered(seed: int, classes: int, dimension: int, samples: int = sum(UNEVEN), spread: float = 1.0,
              offset: float = 3.0, absent: int = 0):
    """float64 features [N, D] around class centres (scale 2) plus a common offset; labels int64 [N] using
    the first `classes − absent` classes, each at least once."""
    generator = torch.Generator().manual_seed(seed)
    used = classes - absent
    labels = torch.cat([torch.arange(used), torch.randint(0, used, (samples - used,), generator=generator)])
    labels = labels[torch.randperm(samples, generator=generator)]
    centres = 2 * torch.randn(classes, dimension, generator=generator, dtype=torch.float64)
    noise = spread * torch.randn(samples, dimension, generator=generator, dtype=torch.float64)
    return offset + centres[labels] + noise, labels


def batch_slices(sizes=UNEVEN):
    start = 0
    for size in sizes:
        yield slice(start, start + size)
        start += size


def context(classes: int) -> Context:
    return Context(classes, 0, Analysis(), 0, torch.device("cpu"))


def class_statistics(features, labels, classes: int, precision=torch.float64) -> ClassStatistics:
    """The class_moments statistic of the training split, streamed over the UNEVEN batches in `precision`."""
    statistics = ClassStatistics(frozenset(), context(classes))
    moments = statistics.moments["train"] = ClassMoments(classes, features.shape[1], precision=precision)
    for rows in batch_slices():
        moments.update(features[rows], labels[rows])
    return statistics


def streamed_nc1(features, labels, classes: int, precision=torch.float64) -> float:
    """NC1 as the engine computes it: class moments, fit, then `predict` on the training batches."""
    statistics = {"class_moments": class_statistics(features, labels, classes, precision)}
    projection = WithinClassProjection(frozenset(), context(classes), precision=precision)
    projection.fit(statistics)
    for rows in batch_slices():
        projection.predict(Batch("train", features[rows].to(precision), labels[rows], {}, {}, 512), statistics)
    return within_over_between(statistics["class_moments"].moments["train"], projection.products)


def relative_difference(actual: float, expected: float) -> float:
    return abs(actual - expected) / abs(expected)


# ---- NC1 -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed, classes, dimension, absent", [
    (0, 3, 6, 0), (1, 7, 40, 0), (2, 5, 20, 1), (3, 4, 12, 0),
    (4, 7, 3, 0),  # D < C − 1: Σ_B has rank D (full), below the usual C − 1
    (5, 6, 4, 1),  # D < C − 1 among the 5 present classes, one class absent
])
def test_nc1_streamed_equals_the_direct_formula(seed, classes, dimension, absent):
    """Measured: ≤ 1.5e-15 relative (float64 throughout); 1e-8 leaves room for float64 SVD rounding only."""
    features, labels = clustered(seed, classes, dimension, absent=absent)
    expected = numpy_nc1(features, labels)
    assert relative_difference(streamed_nc1(features, labels, classes), expected) < 1e-8
    assert 1e-3 < expected < 10  # neither collapsed nor degenerate: the comparison means something


def test_nc1_in_float32_keeps_its_relative_precision_near_collapse_far_from_zero():
    """Within-class spread 1e-4 around centres offset by 1000: float32 rounds each class mean by up to 3e-5
    (its spacing there is 6e-5), a third of the spread. The float32 path subtracts the mean's float32 part
    (exactly, the two being close) and corrects for the rest after projecting: measured ≤ 2.3e-8 relative
    to float64 on the same float32 features (seeds 6-8; spreads 1e-3 and 3e-4 alike); 1e-6 allowed.
    Rounding the means instead costs 2.7-3.4e-2 (computed below, so this test can fail)."""
    features, labels = clustered(6, 5, 16, spread=1e-4, offset=1000.0)
    single = features.float().double()  # the float32 features, exactly, as float64
    expected = numpy_nc1(single, labels)
    assert relative_difference(streamed_nc1(single.float(), labels, 5, torch.float32), expected) < 1e-6
    rounded = {c: single[labels == c].mean(dim=0).float().double().numpy() for c in range(5)}
    assert relative_difference(numpy_nc1(single, labels, means=rounded), expected) > 5e-3


def test_nc1_is_zero_for_collapsed_classes_and_nan_for_a_single_class():
    generator = torch.Generator().manual_seed(7)
    labels = torch.randint(0, 6, (sum(UNEVEN),), generator=generator)
    centres = 1000 + 3 * torch.randn(6, 32, generator=generator)  # float32, with a large common offset
    for precision in (torch.float32, torch.float64):
        assert streamed_nc1(centres[labels].to(precision), labels, 6, precision) == 0.0
    one_class = torch.zeros_like(labels)
    features, _ = clustered(8, 3, 5)
    assert math.isnan(streamed_nc1(features, one_class, 3))


# ---- NC2 -----------------------------------------------------------------------------------------------------

def moments_of(features, labels, classes: int) -> ClassMoments:
    return class_statistics(features, labels, classes).moments["train"]


def simplex_means(classes: int, dimension: int, seed: int) -> torch.Tensor:
    """A simplex ETF: the standard basis of R^C minus its mean, scaled by 5, rotated into R^D (D ≥ C) by
    a random orthonormal map and offset by 2."""
    generator = torch.Generator().manual_seed(seed)
    simplex = 5 * (torch.eye(classes, dtype=torch.float64) - 1 / classes)
    rotation, _ = torch.linalg.qr(torch.randn(dimension, classes, generator=generator, dtype=torch.float64))
    return simplex @ rotation.T + 2


def test_nc2_of_a_simplex_etf_is_zero_and_unequal_norms_are_not():
    """Balanced classes (μ_G is then the mean of the class means). Measured ≤ 2e-16 on the ETF; 1e-12 allowed."""
    classes = 5
    labels = torch.arange(classes).repeat(30)
    means = simplex_means(classes, 12, seed=9)
    geometry = class_mean_geometry(moments_of(means[labels], labels, classes))
    assert geometry["equinorm"] < 1e-12 and geometry["equiangularity"] < 1e-12 and geometry["etf_distance"] < 1e-12
    stretched = means.clone()
    stretched[:2] = 2 + 3 * (means[:2] - 2)  # two classes three times farther: unequal norms and angles
    geometry = class_mean_geometry(moments_of(stretched[labels], labels, classes))
    assert geometry["equinorm"] > 0.1 and geometry["equiangularity"] > 0.01 and geometry["etf_distance"] > 0.01


@pytest.mark.parametrize("seed, classes, dimension, absent", [(10, 4, 8, 0), (11, 7, 30, 2), (12, 3, 2, 0)])
def test_nc2_equals_numpy_on_random_class_moments(seed, classes, dimension, absent):
    """Uneven class counts, absent classes ignored; measured ≤ 9e-16 absolute; 1e-10 allowed."""
    features, labels = clustered(seed, classes, dimension, spread=2.0, absent=absent)
    geometry = class_mean_geometry(moments_of(features, labels, classes))
    expected = numpy_geometry(features, labels)
    for name, value in expected.items():
        assert abs(geometry[name] - value) < 1e-10, name
    assert expected["equinorm"] > 1e-2 and expected["equiangularity"] > 1e-2  # far from an ETF


def test_nc2_is_nan_with_fewer_than_two_present_classes():
    features, _ = clustered(13, 4, 6)
    labels = torch.full((len(features),), 2)
    assert all(math.isnan(value) for value in class_mean_geometry(moments_of(features, labels, 4)).values())


# ---- NC4 -----------------------------------------------------------------------------------------------------

def numpy_agreement(features, centres, present, predictions) -> int:
    """Examples whose nearest present centre (float64 squared distances) is the network's prediction."""
    distances = ((np.asarray(features)[:, None, :] - np.asarray(centres)[None]) ** 2).sum(axis=2)
    distances[:, ~np.asarray(present)] = np.inf
    return int((distances.argmin(axis=1) == np.asarray(predictions)).sum())


def test_nc4_agreement_equals_a_numpy_count_on_both_splits():
    """The network's predictions: the true labels with a third replaced at random (some by the absent
    class 5, which NCC never predicts). Exact counts (no near-ties: checked below)."""
    classes, generator = 6, torch.Generator().manual_seed(14)
    features, labels = clustered(14, classes, 10, samples=sum(UNEVEN) + 90, spread=1.5, absent=1)
    (train, test), (train_labels, test_labels) = features.split(sum(UNEVEN)), labels.split(sum(UNEVEN))
    statistics = {"class_moments": class_statistics(train.float(), train_labels, classes, torch.float32)}
    statistics["ncc"] = NearestCentre(frozenset(), context(classes))  # NC4 reads its predictions of each batch
    agreement = NearestCentreAgreement(frozenset(), context(classes))
    centres = statistics["class_moments"].moments["train"].mean
    present = (statistics["class_moments"].moments["train"].count > 0).numpy()
    expected = {}
    for split, features, labels, sizes in (("train", train, train_labels, UNEVEN), ("test", test, test_labels, (40, 50))):
        replaced = torch.rand(len(labels), generator=generator) < 1 / 3
        predictions = torch.where(replaced, torch.randint(0, classes, labels.shape, generator=generator), labels)
        for rows in batch_slices(sizes):
            batch = Batch(split, features[rows].float(), labels[rows], {}, {}, 512, network_predictions=predictions[rows])
            statistics["ncc"].predict(batch, statistics)
            agreement.predict(batch, statistics)
        expected[split] = numpy_agreement(features.float().double(), centres, present, predictions) / len(labels)
        distances = torch.cdist(features.float().double(), centres[torch.as_tensor(present)]).square()
        smallest = distances.topk(2, dim=1, largest=False).values
        assert ((smallest[:, 1] - smallest[:, 0]) > 1e-3 * smallest[:, 0]).all()  # float32 cannot flip an argmin
    layer = LayerResults("block", ("train", "test"), {"train": len(train), "test": len(test)},
                         statistics={"ncc_agreement": agreement})
    assert nc4_ncc_agreement(layer) == expected
    assert 0.3 < expected["train"] < 0.95 and 0.3 < expected["test"] < 0.95  # some agree, some do not


# ---- through the engine ---------------------------------------------------------------------------------------

def test_the_engine_measures_nc1_nc2_and_nc4_at_every_layer():
    """nc1 through the engine (float32 batches) against the float64 D × D formula on model.features: measured
    ≤ 2.4e-7 relative (image seeds 0-5); 1e-5 allowed. nc2_equinorm: measured ≤ 9e-8 relative, 1e-6 allowed.
    nc4: equal to the float64 NumPy count (the engine's float32 NCC scores flip no argmin on this data)."""
    import data

    train, test = class_images(120, 3, seed=0), class_images(60, 3, seed=1)
    model = tiny_mlp()
    options = Analysis(metrics="nc1,nc2_equinorm,nc4_ncc_agreement", analysis_batch_size=50, heldout_fraction=0.25)
    rows = {(row["layer"], row["metric"], row["split"]): row["value"]
            for row in engine.measure(model, train, test, 3, options, seed=0)}
    layers = ("input", "block00", "logits")
    assert set(rows) == {(layer, "nc1", "train") for layer in layers} | {
        (layer, metric, split) for layer in layers for metric in ("nc2_equinorm", "nc4_ncc_agreement")
        for split in ("train", "test")}
    assert all(math.isfinite(value) for value in rows.values())
    with torch.no_grad():
        features = {split: model.features(data.normalize(part.images, ENGINE_MEAN, ENGINE_STD))
                    for split, part in (("train", train), ("test", test))}
    for layer in layers:
        flat = features["train"][layer].flatten(1).double()
        assert relative_difference(rows[(layer, "nc1", "train")], numpy_nc1(flat, train.labels)) < 1e-5, layer
        for split, part in (("train", train), ("test", test)):
            expected = numpy_geometry(features[split][layer].flatten(1).double(), part.labels)["equinorm"]
            assert relative_difference(rows[(layer, "nc2_equinorm", split)], expected) < 1e-6, (layer, split)
            centres = np.stack([flat[train.labels == c].mean(dim=0).numpy() for c in range(3)])
            predictions = features[split]["logits"].argmax(dim=1)
            agreeing = numpy_agreement(features[split][layer].flatten(1).double(), centres, np.ones(3, bool), predictions)
            assert rows[(layer, "nc4_ncc_agreement", split)] == agreeing / len(part.labels), (layer, split)
    assert {METRICS[name].version for name in ("nc1", "nc2_equinorm", "nc2_equiangularity", "nc2_etf_distance",
                                               "nc4_ncc_agreement")} == {1}
    assert metrics.collapse.PAPER in {METRICS[name].paper for name in METRICS}
