"""python -m pytest tests/test_statistics.py -q — the per-layer analysis engine's statistics (metrics/statistics.py)
and what they rest on: RidgeMoments with several targets, the float32 product path and its float64
fallbacks, the registry's selection and recipes, the engine's passes (metrics/engine.py).
Each against a float64 NumPy reference written here, or against the engine's own full path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as functional

from conf.analysis import Analysis
from conf.errors import SettingsError
from metrics import engine, registry
from metrics.moments import ClassMoments, ncc_predictions
from metrics.ridge import L2_GRID, RidgeMoments, Target, eigenbasis, held_out_errors, ridge_fit, ridge_mse
from metrics.statistics import (RESIDUAL_RATIO, Batch, Context, RidgeMaps, closure, collapsed,
                                residual_fraction)
from tests.fabricate import ENGINE_MEAN, ENGINE_STD, class_images, keyed, tiny_mlp
from utils import seeded_generator

pytestmark = pytest.mark.usefixtures("one_thread", "flush_often")  # tiny tensors: see tests/conftest.py


@pytest.fixture
def flush_often(monkeypatch):
    """Staged float32 products flushed to the float64 sums every 4 batches, so a stream of a few batches
    goes through flushes mid-stream (the engine's default waits for 32)."""
    import metrics.cross_moments

    monkeypatch.setattr(metrics.cross_moments, "STAGED_BATCHES", 4)

# Uneven batch sizes, more batches than STAGED_BATCHES (set to 4 here by `flush_often`) so the staged
# products are flushed mid-stream, and one empty batch.
UNEVEN = (7, 50, 1, 33, 0, 19, 64, 5, 23, 11, 40, 27)


# ---- float64 NumPy references --------------------------------------------------------------------------

def numpy_moments(features, targets: dict) -> dict:
    """Raw sums (XᵀX, Σx, and per target XᵀT, Σt, Σ‖t‖²) and centred scatters, float64."""
    x = np.asarray(features, dtype=np.float64)
    centred_x = x - x.mean(axis=0)
    reference = {"gram": x.T @ x, "feature_sum": x.sum(axis=0), "feature_mean": x.mean(axis=0),
                 "feature_scatter": centred_x.T @ centred_x}
    for name, values in targets.items():
        t = np.asarray(values, dtype=np.float64)
        centred_t = t - t.mean(axis=0)
        reference[name] = {"cross": x.T @ t, "target_sum": t.sum(axis=0), "square_sum": (t ** 2).sum(),
                           "target_mean": t.mean(axis=0), "cross_scatter": centred_x.T @ centred_t,
                           "target_scatter": (centred_t ** 2).sum()}
    return reference


def raw_sums(moments: RidgeMoments, name: str) -> dict:
    """The raw sums XᵀX, XᵀT, ... rebuilt from the stream's sums about its shifts s (features) and a (target):
    Σxxᵀ = G + s fᵀ + f sᵀ + n s sᵀ with f = Σ(x − s), and Σx tᵀ = C + s gᵀ + f aᵀ + n s aᵀ
    with g = Σ(t − a)."""
    n, s, f = moments.count, moments.feature_shift, moments.feature_sum
    a, g = moments.target_shift[name], moments.target_sum[name]
    outer = torch.outer
    return {"gram": moments.feature_gram + outer(s, f) + outer(f, s) + n * outer(s, s),
            "feature_sum": f + n * s,
            "cross": moments.cross[name] + outer(s, g) + outer(f, a) + n * outer(s, a),
            "target_sum": g + n * a,
            "square_sum": moments.target_square_sum[name] + 2 * a @ g + n * a.square().sum()}


def assert_matches_reference(moments: RidgeMoments, reference: dict, rtol: float = 1e-11) -> None:
    """Shared Gram and every target's view against the NumPy reference (raw sums and CrossMoments.centred())."""
    def close(actual, expected, what):
        expected = np.asarray(expected)
        scale = max(np.abs(expected).max(), 1.0)
        np.testing.assert_allclose(np.asarray(actual.cpu() if torch.is_tensor(actual) else actual), expected,
                                   rtol=rtol, atol=rtol * scale, err_msg=what)

    for name in moments.targets:
        raw = raw_sums(moments, name)
        close(raw["gram"], reference["gram"], f"{name}: XᵀX")
        close(raw["feature_sum"], reference["feature_sum"], f"{name}: Σx")
        close(raw["cross"], reference[name]["cross"], f"{name}: XᵀT")
        close(raw["target_sum"], reference[name]["target_sum"], f"{name}: Σt")
        close(raw["square_sum"], reference[name]["square_sum"], f"{name}: Σ‖t‖²")
        feature_mean, target_mean, feature_scatter, cross_scatter, target_scatter = moments.view(name).centred()
        close(feature_mean, reference["feature_mean"], f"{name}: x̄")
        close(target_mean, reference[name]["target_mean"], f"{name}: t̄")
        close(feature_scatter, reference["feature_scatter"], f"{name}: Σ(x−x̄)(x−x̄)ᵀ")
        close(cross_scatter, reference[name]["cross_scatter"], f"{name}: Σ(x−x̄)(t−t̄)ᵀ")
        close(target_scatter, reference[name]["target_scatter"], f"{name}: Σ‖t−t̄‖²")


def regression_data(seed: int, samples: int = sum(UNEVEN), dimension: int = 6):
    """Features [N, D] around 3 (not 0, so the shifts matter) and two targets: one-hot classes (K=4)
    and a noisy linear map of the features with an offset (K=5), all float64."""
    generator = torch.Generator().manual_seed(seed)
    features = 3 + 2 * torch.randn(samples, dimension, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 4, (samples,), generator=generator)
    image = (features @ torch.randn(dimension, 5, generator=generator, dtype=torch.float64) - 7
             + torch.randn(samples, 5, generator=generator, dtype=torch.float64))
    return features, {"classes": functional.one_hot(labels, 4).double(), "image": image}


def batch_slices(sizes=UNEVEN):
    start = 0
    for size in sizes:
        yield slice(start, start + size)
        start += size


# ---- 1. RidgeMoments: one Gram, several targets --------------------------------------------------------

def test_shared_gram_and_every_targets_view_equal_numpy_over_uneven_batches():
    features, targets = regression_data(0)
    moments = RidgeMoments(6, {"classes": 4, "image": 5})
    for rows in batch_slices():
        moments.update(features[rows], {name: values[rows] for name, values in targets.items()})
    assert moments.count == len(features)
    torch.testing.assert_close(moments.feature_shift, features[:UNEVEN[0]].mean(dim=0), rtol=0, atol=0)
    assert_matches_reference(moments, numpy_moments(features, targets))
    assert moments.view("image").feature_gram is moments.view("classes").feature_gram  # one Gram, shared


def test_targets_sharing_a_shift_and_targets_with_another_shift_give_the_same_moments():
    """Target objects sharing one shift (as engine.prepared_batches makes them), and later batches whose
    Target carries a shift that differs from the stream's (re-expressed by Target.sums_about)."""
    features, targets = regression_data(1)
    shared = {name: values[5:40].mean(dim=0) for name, values in targets.items()}  # any shift will do
    other = {name: values.mean(dim=0) + 11.0 for name, values in targets.items()}  # not the stream's
    for later in (shared, other):
        moments = RidgeMoments(6, {"classes": 4, "image": 5})
        for index, rows in enumerate(batch_slices()):
            shifts = shared if index == 0 else later
            batch = {name: Target(values[rows], shifts[name]) for name, values in targets.items()}
            moments.update(features[rows], batch)
        assert all(moments.target_shift[name] is shared[name] for name in targets)  # the first batch's Target's
        assert_matches_reference(moments, numpy_moments(features, targets))


def stream(features, targets, rows_list, precision=torch.float64, shift_like=None, target_shifts=None):
    moments = RidgeMoments(features.shape[1], {name: values.shape[1] for name, values in targets.items()},
                           precision=precision, shift_like=shift_like)
    for rows in rows_list:
        batch = {name: values[rows] if target_shifts is None else Target(values[rows], target_shifts[name])
                 for name, values in targets.items()}
        moments.update(features[rows].to(precision), batch)
    return moments


def test_merging_two_streams_equals_one_stream_over_all_rows():
    """Shared shifts (`shift_like=` and Targets sharing a shift: the plain-sum path) and different shifts
    (the re-shifting path) both give the moments of one stream over every row; neither operand changes."""
    features, targets = regression_data(2)
    slices = list(batch_slices())
    first_rows, second_rows = slices[:5], slices[5:]
    target_shifts = {name: values[:30].mean(dim=0) for name, values in targets.items()}
    first = stream(features, targets, first_rows, target_shifts=target_shifts)
    shared = stream(features, targets, second_rows, shift_like=first, target_shifts=target_shifts)
    assert shared.feature_shift is first.feature_shift
    different = stream(features, targets, second_rows)
    assert not torch.equal(different.feature_shift, first.feature_shift)
    reference = numpy_moments(features, targets)
    before = first.view("image").centred()[2].clone()
    for second in (shared, different):
        merged = first.merge(second)
        assert merged.count == len(features)
        assert_matches_reference(merged, reference)
        assert_matches_reference(second.merge(first), reference)  # either order
    torch.testing.assert_close(first.view("image").centred()[2], before, rtol=0, atol=0)
    empty = RidgeMoments(6, {"classes": 4, "image": 5})
    assert_matches_reference(empty.merge(first.merge(different)), reference)


def test_merging_one_targets_views_equals_that_target_over_all_rows():
    """CrossMoments.merge of two streams' views of one target: that target alone, the Gram shared."""
    features, targets = regression_data(3)
    slices = list(batch_slices())
    first, second = stream(features, targets, slices[:7]), stream(features, targets, slices[7:])
    reference = numpy_moments(features, targets)
    for name in targets:
        merged = first.view(name).merge(second.view(name))
        assert merged.moments.targets == {name: targets[name].shape[1]} and merged.count == len(features)
        assert_matches_reference(merged.moments, reference)


# ---- 2. float32 products against float64 ----------------------------------------------------------------

def clustered(seed: int, spread: float, samples: int = 2000, dimension: int = 64, classes: int = 10):
    """Class means (unit Gaussian, offset by 2) + spread × noise, float64; the one-hot classes and a noisy
    linear map of the features (R² about 0.5) as targets."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (samples,), generator=generator)
    centres = torch.randn(classes, dimension, generator=generator, dtype=torch.float64)
    features = 2 + centres[labels] + spread * torch.randn(samples, dimension, generator=generator, dtype=torch.float64)
    image = (features @ torch.randn(dimension, 12, generator=generator, dtype=torch.float64) / dimension ** 0.5
             + torch.randn(samples, 12, generator=generator, dtype=torch.float64))
    return features, labels, {"classes": functional.one_hot(labels, classes).double(), "image": image}


def probe_errors(features, targets, precision, l2: float = 1e-3) -> dict:
    """Per target: (held-out errors over L2_GRID, ridge_mse at `l2` on all rows), with products in `precision`
    (features and targets fed in that dtype, as the engine does), held-out part = the last 400 rows."""
    fitting = [slice(start, min(start + 300, 1600)) for start in range(0, 1600, 300)]
    held = [slice(start, min(start + 300, len(features))) for start in range(1600, len(features), 300)]
    cast = {name: values.to(precision) for name, values in targets.items()}
    fit = stream(features, cast, fitting, precision)
    held_out = stream(features, cast, held, precision, shift_like=fit)
    whole, basis = fit.merge(held_out), eigenbasis(fit)
    errors = {}
    for name in targets:
        weights, bias = ridge_fit(whole.view(name), l2)
        grid = held_out_errors(fit.view(name), held_out.view(name), basis=basis, precision=precision)
        errors[name] = (np.array(grid), ridge_mse(whole.view(name), weights, bias, precision))
    return errors


def relative_difference(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))))


def test_float32_products_agree_with_float64_on_ordinary_features():
    """Measured (seeds 0-3): held-out errors over L2_GRID within 6.2e-7 relative of float64's, ridge_mse
    at l2=1e-3 within 3.9e-7, for both the one-hot probe and the linear target. Tolerance 1e-5: 16x wider."""
    features, _, targets = clustered(0, spread=1.0)
    single, double = probe_errors(features, targets, torch.float32), probe_errors(features, targets, torch.float64)
    for name in targets:
        assert len(single[name][0]) == len(double[name][0]) == len(L2_GRID)
        assert relative_difference(single[name][0], double[name][0]) < 1e-5, name
        assert relative_difference(single[name][1], double[name][1]) < 1e-5, name
        assert double[name][1] > 1e-3  # an ordinary residual, not an exact fit


def test_float32_products_lose_the_near_collapsed_probes_error_so_the_engine_keeps_float64():
    """Class means + 1e-3 × noise: the one-hot probe's error (~2e-8) is the small difference of large
    terms. Measured (seeds 0-3): float32's ridge_mse at l2=1e-3 is 6 % to 52 % off float64's (22 % for
    seed 0), its held-out errors 52 % to 113 % (68 % for seed 0). Asserted: > 1e-2 and > 1e-1."""
    features, labels, targets = clustered(0, spread=1e-3)
    classes = {"classes": targets["classes"]}
    single, double = probe_errors(features, classes, torch.float32), probe_errors(features, classes, torch.float64)
    assert relative_difference(single["classes"][1], double["classes"][1]) > 1e-2
    assert relative_difference(single["classes"][0], double["classes"][0]) > 1e-1
    ordinary, _, _ = clustered(0, spread=1.0)
    assert collapsed(features.float(), labels, 10)
    assert not collapsed(ordinary.float(), labels, 10)
    assert ridge_maps_after_one_batch(features.float(), labels).precision == torch.float64
    assert ridge_maps_after_one_batch(ordinary.float(), labels).precision == torch.float32


def context(num_classes: int = 10, **options) -> Context:
    return Context(num_classes, 0, Analysis(**options), 0, torch.device("cpu"))


def train_batch(features, labels, targets: dict, fitting: int, probe_dimensions: int = 512) -> Batch:
    """The training split's Batch as engine.prepared_batches makes it: Targets sharing each target's
    first-batch shift, fitting rows first."""
    shared = {name: Target(values, values.mean(dim=0).double()) for name, values in targets.items()}
    parts = (slice(0, fitting), slice(fitting, len(labels)))
    part_targets = tuple({name: Target(target.values[rows], target.shift) for name, target in shared.items()}
                         for rows in parts)
    return Batch("train", features, labels, shared, {"classes": labels}, probe_dimensions, parts, part_targets)


def ridge_maps_after_one_batch(features, labels, classes: int = 10) -> RidgeMaps:
    maps = RidgeMaps(frozenset({"classes"}), context(classes))
    one_hot = functional.one_hot(labels, classes).float()
    maps.observe(train_batch(features, labels, {"classes": one_hot}, fitting=len(labels) * 4 // 5), {})
    return maps


def numpy_class_moments(features, labels, classes: int):
    x = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    means = np.stack([x[labels == c].mean(axis=0) for c in range(classes)])
    scatter = np.array([((x[labels == c] - means[c]) ** 2).sum() for c in range(classes)])
    return means, scatter


@pytest.mark.parametrize("spread, mean_tolerance, scatter_tolerance", [
    # Measured (seeds 0-3, reference on the same float32 features in float64): ordinary |Δmean| ≤ 1.05e-7 ×
    # spread, scatter ≤ 1.34e-7 relative; near-collapsed |Δmean| ≤ 2.7e-8 × spread, scatter ≤ 1.7e-7
    # relative (each class is shifted by one of its samples first). Tolerances ≥ 10x wider. Without that
    # shift, float32 rounding of values near 3 (~1e-7) would be ~1e-4 of the near-collapsed spread.
    (1.0, 2e-6, 2e-6),
    (1e-3, 5e-7, 2e-6),
])
def test_class_moments_in_float32_match_numpy(spread, mean_tolerance, scatter_tolerance):
    features, labels, _ = clustered(0, spread=spread)
    single = features.float()
    moments = ClassMoments(10, 64, precision=torch.float32)
    for rows in batch_slices((300,) * 6 + (200,)):
        moments.update(single[rows], labels[rows])
    means, scatter = numpy_class_moments(single.double(), labels, 10)
    assert np.abs(moments.mean.numpy() - means).max() < mean_tolerance * spread
    np.testing.assert_allclose(moments.scatter.numpy(), scatter, rtol=scatter_tolerance)
    assert moments.count.tolist() == [float((labels == c).sum()) for c in range(10)]


def test_exactly_collapsed_classes_have_scatter_exactly_zero_in_float32():
    generator = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 6, (500,), generator=generator)
    centres = 1000 + 3 * torch.randn(6, 32, generator=generator)  # a large offset: no cancellation either
    moments = ClassMoments(6, 32, precision=torch.float32)
    for rows in batch_slices((37, 200, 1, 262)):
        moments.update(centres[labels[rows]], labels[rows])
    assert moments.scatter.tolist() == [0.0] * 6
    assert torch.equal(moments.mean, centres.double())


def test_ncc_predictions_in_float32_equal_float64_wherever_the_top_two_are_apart():
    """Overlapping classes (spread 3, unit-scale centres), so near-ties exist: rows whose two smallest
    float64 squared distances differ by more than 1e-4 of the smallest must get the same prediction."""
    features, labels, _ = clustered(5, spread=3.0)
    means, _ = numpy_class_moments(features, labels, 10)
    centres, present = torch.as_tensor(means), torch.ones(10, dtype=torch.bool)
    double = ncc_predictions(features, centres, present)
    single = ncc_predictions(features, centres, present, torch.float32)
    distances = torch.cdist(features, centres).square()
    smallest = distances.topk(2, dim=1, largest=False).values
    clear = (smallest[:, 1] - smallest[:, 0]) > 1e-4 * smallest[:, 0]
    assert clear.float().mean() > 0.99 and (double != labels).any()  # a real test: mistakes and few near-ties
    assert torch.equal(single[clear], double[clear])
    assert torch.equal(double, distances.argmin(dim=1))


# ---- 3. the registry: selection, requirements, recipes ---------------------------------------------------

def test_select_all_a_comma_list_and_an_unknown_name():
    assert registry.select("all") == tuple(name for name, metric in registry.METRICS.items() if not metric.on_request)
    assert registry.select(" cdnv ,ncc_accuracy") == ("ncc_accuracy", "cdnv")  # registry order
    assert registry.select("reconstruction_mse") == ("reconstruction_mse",)
    with pytest.raises(SettingsError, match="no_such_metric"):
        registry.select("cdnv,no_such_metric")


def test_closure_expands_what_a_need_requires():
    assert closure(["ridge_correct:classes"]) == {"ridge": {"classes"}, "ridge_correct": {"classes"}}
    assert list(closure(["ridge_correct:classes"])) == ["ridge", "ridge_correct"]  # the order they are gathered
    assert closure(["ncc"]) == {"class_moments": frozenset(), "ncc": frozenset()}
    assert closure(["ridge_test:image", "ridge_correct:classes", "classifier"]) == {
        "ridge": {"image", "classes"}, "ridge_test": {"image"}, "ridge_correct": {"classes"}, "classifier": set()}


@pytest.mark.parametrize("option, value, unchanged, changed", [
    ("transfer_task", "brightness", ("ncc_accuracy", "cdnv", "probe_accuracy", "reconstruction_mse"),
     ("transfer_accuracy",)),
    ("features_at", "pre_activation", ("classifier_loss", "classifier_accuracy"),
     ("ncc_accuracy", "cdnv", "probe_accuracy")),
    ("heldout_fraction", 0.25, ("ncc_accuracy", "cdnv", "effective_depth", "effective_depth_literal"),
     ("reconstruction_mse", "probe_accuracy")),
    ("effective_depth_epsilon", 0.05, ("ncc_accuracy", "cdnv", "probe_accuracy"),
     ("effective_depth", "effective_depth_literal")),
    # batch statistics are the batch's: the one metric that reads them depends on its size (tests/test_eval_mode.py)
    ("analysis_batch_size", 7, tuple(name for name in registry.METRICS if name != "classifier_accuracy_batch_statistics"),
     ("classifier_accuracy_batch_statistics",)),
    ("metrics", "cdnv", tuple(registry.METRICS), ()),
    ("feature_cache_gb", 0.0, tuple(registry.METRICS), ()),
])
def test_a_recipe_changes_exactly_with_the_options_its_metric_depends_on(option, value, unchanged, changed):
    before = registry.recipes(Analysis())
    after = registry.recipes(dataclasses.replace(Analysis(), **{option: value}))
    assert {name: after[name] for name in unchanged} == {name: before[name] for name in unchanged}
    assert all(after[name] != before[name] for name in changed), option


# ---- 4. the engine: only the selected metrics' statistics ----------------------------------------------

def test_measure_of_two_metrics_gives_exactly_their_rows_with_the_full_measures_values(monkeypatch):
    train, test = class_images(120, 3, seed=0), class_images(60, 3, seed=1)
    options = Analysis(probe_dimensions=64, analysis_batch_size=50, heldout_fraction=0.25)
    gathered, collect = [], engine.collect

    def spy(*args):
        layers = collect(*args)
        gathered.append(set().union(*(layer.statistics for layer in layers.values())))
        return layers

    monkeypatch.setattr(engine, "collect", spy)
    chosen = keyed(engine.measure(tiny_mlp(), train, test, 3, options, seed=0, metrics=("ncc_accuracy", "cdnv")))
    assert gathered == [{"class_moments", "ncc"}]  # the two metrics' statistics, nothing else
    monkeypatch.undo()
    full = keyed(engine.measure(tiny_mlp(), train, test, 3, options, seed=0))
    layers = ("input", "block00", "logits")
    assert set(chosen) == {(layer, metric, split) for layer in layers for metric in ("ncc_accuracy", "cdnv")
                           for split in ("train", "test")}
    assert chosen == {key: full[key] for key in chosen}  # bitwise
    assert {key[1] for key in full} > {"ncc_accuracy", "cdnv", "reconstruction_mse", "probe_accuracy"}
    decoded = {layer for layer, metric, _ in full if metric == "reconstruction_mse"}
    assert decoded == {"block00", "logits"}  # not the input: its decoder is the identity


def test_collect_for_ncc_gathers_no_ridge_statistic():
    train, test = class_images(60, 3, seed=2), class_images(30, 3, seed=3)
    layers = engine.collect(tiny_mlp(), train, test, 3, Analysis(analysis_batch_size=25), 0, needs=["ncc"])
    assert list(layers) == ["input", "block00", "logits"]
    for layer in layers.values():
        assert set(layer.statistics) == {"class_moments", "ncc"}, layer.name
        assert layer.maps == {} and set(layer.ncc_correct) == {"train", "test"}


# ---- 5. features_at reaches the model ---------------------------------------------------------------------

def batch_norm_convnet(classes: int = 3):
    """convnet, depth 2, width 4, with BatchNorm whose running statistics are not the identity's."""
    import models
    from conf import Settings

    torch.manual_seed(0)
    model = models.build(Settings(arch="convnet", depth=2, width=4), input_shape=(3, 8, 8), num_classes=classes)
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(module.num_features, generator=generator))
            module.bias.data.copy_(0.3 * torch.randn(module.num_features, generator=generator))
    return model.eval()


def test_features_at_pre_activation_is_what_the_engine_measures():
    """cdnv of a hidden layer differs between the two points, and the engine's pre-activation class means
    are those of model.features(x, point="pre_activation") (float64 NumPy reference; 1e-5 relative: the
    engine reduces each batch in float32)."""
    import data

    train, test = class_images(90, 3, seed=4, size=8), class_images(45, 3, seed=5, size=8)
    model = batch_norm_convnet()
    rows = {}
    for point in ("post_activation", "pre_activation"):
        options = Analysis(features_at=point, analysis_batch_size=40)
        rows[point] = keyed(engine.measure(model, train, test, 3, options, seed=0, metrics=("cdnv",)))
    for layer in ("stem", "block00", "block01"):
        post, pre = rows["post_activation"][(layer, "cdnv", "train")], rows["pre_activation"][(layer, "cdnv", "train")]
        assert abs(post - pre) > 1e-3 * abs(pre), layer
    layers = engine.collect(model, train, test, 3, Analysis(features_at="pre_activation", analysis_batch_size=40),
                            0, needs=["class_moments"])
    with torch.no_grad():
        features = model.features(data.normalize(train.images, ENGINE_MEAN, ENGINE_STD), point="pre_activation")
    for layer in ("stem", "block00", "block01"):
        means, scatter = numpy_class_moments(features[layer].flatten(1).double(), train.labels, 3)
        moments = layers[layer].classes["train"]
        np.testing.assert_allclose(moments.mean.numpy(), means, rtol=1e-5, atol=1e-5 * np.abs(means).max())
        np.testing.assert_allclose(moments.scatter.numpy(), scatter, rtol=1e-5)


# ---- 6. heldout_parts ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [7, 500])
def test_heldout_parts_order_each_batch_fitting_first_and_follow_the_per_example_draw(batch_size):
    examples, seed, name = 1003, 11, "heldout"
    options = Analysis(analysis_batch_size=batch_size, heldout_fraction=0.2)
    drawn = torch.rand(examples, generator=seeded_generator(seed, name)) < 0.2
    parts = engine.heldout_parts(examples, options, seed, name, torch.device("cpu"))
    assert len(parts) == -(-examples // batch_size)
    held_out = []
    for index, (order, fitting) in enumerate(parts):
        start = index * batch_size
        size = min(batch_size, examples - start)
        assert sorted(order.tolist()) == list(range(size))  # every row once
        assert not drawn[start + order[:fitting]].any() and drawn[start + order[fitting:]].all()  # fitting first
        held_out += (start + order[fitting:]).tolist()
    assert sorted(held_out) == torch.nonzero(drawn).flatten().tolist()  # the same rows for either batch size


# ---- 7. refit_in_float64: maps that fit almost exactly -----------------------------------------------------

def test_ridge_maps_flag_a_map_that_fits_almost_exactly_from_float32_products():
    """A target that is an exact linear map of ordinary (not collapsed) features: its residual fraction is
    far below RESIDUAL_RATIO, so fit asks for float64 products; a noisy target (R² ≈ 0.5) does not."""
    features, labels, targets = clustered(6, spread=1.0, samples=600, dimension=16)
    exact = features @ torch.randn(16, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64) + 1
    for name, target, flagged in (("image", exact, True), ("image", targets["image"], False)):
        maps = RidgeMaps(frozenset({name}), context())
        for rows in batch_slices((200, 200, 200)):
            maps.observe(train_batch(features[rows].float(), labels[rows], {name: target[rows].float()}, 160), {})
        assert maps.precision == torch.float32
        maps.fit({})
        fraction = residual_fraction(maps.maps[name].moments["train"], maps.maps[name].weights, maps.maps[name].l2)
        assert (fraction < RESIDUAL_RATIO) == flagged and maps.needs_float64 == flagged, fraction


class CopyModel(torch.nn.Module):
    """The engine's interface: `copy` is the normalised image itself (its decoder is exact), `hidden` a
    random projection of it to 8 dimensions (its decoder is far from exact)."""

    def __init__(self, pixels: int, classes: int):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.hidden = torch.randn(pixels, 8, generator=generator)
        self.head = torch.randn(8, classes, generator=generator)

    def features(self, images, point: str = "post_activation"):
        hidden = images.flatten(1) @ self.hidden
        return {"input": images, "copy": images.flatten(1).clone(), "hidden": hidden, "logits": hidden @ self.head}


def test_the_engine_refits_an_almost_exact_layer_in_float64_and_keeps_float32_elsewhere():
    train, test = class_images(200, 3, seed=8), class_images(40, 3, seed=9)
    options = Analysis(probe_dimensions=64, analysis_batch_size=50, heldout_fraction=0.2)
    layers = engine.collect(CopyModel(48, 3), train, test, 3, options, 0, needs=["ridge_test:image"])
    assert "ridge" not in layers["input"].statistics  # no decoder from the input to itself
    assert layers["copy"].statistics["ridge"].precision == torch.float64
    assert layers["copy"].maps["image"].precision == torch.float64
    assert layers["hidden"].statistics["ridge"].precision == torch.float32
    assert layers["hidden"].statistics["ridge"].needs_float64 is False
    rows = keyed(engine.measure(CopyModel(48, 3), train, test, 3, options, 0, metrics=("reconstruction_mse",)))
    assert rows[("copy", "reconstruction_mse", "test")] < 1e-4 < rows[("hidden", "reconstruction_mse", "test")]
