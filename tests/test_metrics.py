"""python -m pytest tests/test_metrics.py -q — metrics/: each metric against a float64 NumPy reference written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.transfer import colour_dominance_labels
from metrics import (ClassMoments, CrossMoments, cdnv, choose_l2, effective_depth, ncc_predictions, pool_to, ridge_fit,
                     ridge_mse)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py


def classified_data(seed: int, samples: int = 240, classes: int = 5, dimension: int = 6, offset: float = 0.0,
                    absent: tuple[int, ...] = ()):
    """Features [N, D] float64 with a spread of class means around `offset`; labels avoid `absent`."""
    generator = np.random.default_rng(seed)
    allowed = [c for c in range(classes) if c not in absent]
    labels = generator.choice(allowed, size=samples)
    centres = generator.normal(scale=3.0, size=(classes, dimension))
    features = offset + centres[labels] + generator.normal(size=(samples, dimension))
    return features, labels


def streamed(features, labels, classes: int, batch_size: int) -> ClassMoments:
    moments = ClassMoments(classes, features.shape[1])
    for start in range(0, len(labels), batch_size):
        moments.update(torch.as_tensor(features[start:start + batch_size]),
                       torch.as_tensor(labels[start:start + batch_size]))
    return moments


def numpy_class_statistics(features, labels, classes: int):
    """Two-pass per class: means [C, D] and E‖x − μ‖² [C] (nan when absent)."""
    means = np.zeros((classes, features.shape[1]))
    variances = np.full(classes, np.nan)
    for c in range(classes):
        members = features[labels == c]
        if len(members):
            means[c] = members.mean(axis=0)
            variances[c] = ((members - means[c]) ** 2).sum(axis=1).mean()
    return means, variances


def numpy_cdnv(features, labels, classes: int) -> float:
    means, variances = numpy_class_statistics(features, labels, classes)
    present = [c for c in range(classes) if (labels == c).any()]
    ratios = []
    for index, i in enumerate(present):
        for j in present[index + 1:]:
            ratios.append((variances[i] + variances[j]) / (2 * ((means[i] - means[j]) ** 2).sum()))
    return float(np.mean(ratios))


# ---- ClassMoments, CDNV, NCC (Galanti et al., TMLR 2023) ----------------------------------------------

def test_class_moments_match_numpy_per_class():
    features, labels = classified_data(0, absent=(3,))
    moments = streamed(features, labels, 5, batch_size=32)
    means, variances = numpy_class_statistics(features, labels, 5)
    assert moments.count.tolist() == [float((labels == c).sum()) for c in range(5)]
    np.testing.assert_allclose(moments.mean.numpy(), means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(moments.variances().numpy(), variances, rtol=1e-12)  # nan where absent
    assert moments.mean.dtype == moments.scatter.dtype == torch.float64


def test_cdnv_matches_numpy_double_loop_over_pairs():
    features, labels = classified_data(1, classes=6, absent=(2,))
    assert cdnv(streamed(features, labels, 6, batch_size=50)) == pytest.approx(numpy_cdnv(features, labels, 6),
                                                                               rel=1e-12)


def test_ncc_predictions_match_numpy_argmin_over_present_classes():
    features, labels = classified_data(2, classes=6)
    centres = np.random.default_rng(3).normal(scale=3.0, size=(6, 6))
    present = np.array([True, True, False, True, True, False])
    distances = ((features[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    expected = np.where(present, distances, np.inf).argmin(axis=1)
    predictions = ncc_predictions(torch.as_tensor(features, dtype=torch.float32), torch.as_tensor(centres),
                                  torch.as_tensor(present))
    assert predictions.dtype == torch.int64
    assert predictions.tolist() == expected.tolist()


def test_perfectly_collapsed_classes_have_ncc_accuracy_one_and_cdnv_exactly_zero():
    generator = torch.Generator().manual_seed(4)
    centres = torch.randn(4, 8, generator=generator) + 100.0
    labels = torch.randint(0, 4, (90,), generator=generator)
    features = centres[labels]  # every sample equals its class mean
    moments = ClassMoments(4, 8)
    for start in range(0, 90, 13):
        moments.update(features[start:start + 13], labels[start:start + 13])
    assert cdnv(moments) == 0.0
    assert torch.equal(moments.scatter, torch.zeros(4, dtype=torch.float64))
    predictions = ncc_predictions(features, moments.mean, moments.count > 0)
    assert (predictions == labels).double().mean().item() == 1.0
    lonely = ClassMoments(4, 8)
    lonely.update(features[labels == 0], labels[labels == 0])
    assert np.isnan(cdnv(lonely))  # no pair of present classes


def test_cdnv_is_stable_when_the_mean_is_ten_thousand_times_the_spread():
    features, labels = classified_data(5, samples=600, classes=4, dimension=16, offset=1e4)
    features32 = torch.as_tensor(features, dtype=torch.float32)  # what a network would hand over
    reference = numpy_cdnv(features32.double().numpy(), labels, 4)  # from the very same float32 values
    moments = ClassMoments(4, 16)
    for start in range(0, 600, 64):
        moments.update(features32[start:start + 64], torch.as_tensor(labels[start:start + 64]))
    assert cdnv(moments) == pytest.approx(reference, rel=1e-6)
    # E‖h‖² − ‖Eh‖², even in float64, is only ~1e-8 accurate here; the shifted two-pass merge is ~1e-14.
    np.testing.assert_allclose(moments.variances().numpy(),
                               numpy_class_statistics(features32.double().numpy(), labels, 4)[1], rtol=1e-11)


def test_class_moments_do_not_depend_on_batch_size_or_order():
    features, labels = classified_data(6, samples=150, offset=50.0)
    order = np.random.default_rng(7).permutation(150)
    shuffled_features, shuffled_labels = features[order], labels[order]
    results = [streamed(shuffled_features, shuffled_labels, 5, size) for size in (1, 7, 150)]
    halves = [streamed(features[part], labels[part], 5, 10) for part in (slice(0, 70), slice(70, 150))]
    results.append(halves[0].merge(halves[1]))
    reference = streamed(features, labels, 5, 150)
    for moments in results:
        assert torch.equal(moments.count, reference.count)
        torch.testing.assert_close(moments.mean, reference.mean, rtol=1e-10, atol=0)
        torch.testing.assert_close(moments.scatter, reference.scatter, rtol=1e-10, atol=0)
        assert cdnv(moments) == pytest.approx(cdnv(reference), rel=1e-10)


# ---- ridge regression from moments (LearnPhase: Schneider & Prabhushankar, AAAI 2024) -----------------

def regression_data(seed: int, samples: int, dimension: int = 10, targets: int = 4, noise: float = 0.5):
    generator = np.random.default_rng(seed)
    features = 5.0 + generator.normal(size=(samples, dimension)) @ generator.normal(size=(dimension, dimension))
    mapping = generator.normal(size=(dimension, targets))
    outputs = -2.0 + features @ mapping + noise * generator.normal(size=(samples, targets))
    return features, outputs


def cross_moments(features, targets, batch_size: int = 64) -> CrossMoments:
    moments = CrossMoments(features.shape[1], targets.shape[1])
    for start in range(0, len(features), batch_size):
        moments.update(torch.as_tensor(features[start:start + batch_size]),
                       torch.as_tensor(targets[start:start + batch_size]))
    return moments


def numpy_ridge(features, targets, l2: float):
    """Closed form on centred data, with the penalty scaled by the mean per-feature variance."""
    feature_mean, target_mean = features.mean(axis=0), targets.mean(axis=0)
    centred_features, centred_targets = features - feature_mean, targets - target_mean
    covariance = centred_features.T @ centred_features / len(features)
    penalty = l2 * np.trace(covariance) / features.shape[1]
    weights = np.linalg.solve(covariance + penalty * np.eye(features.shape[1]),
                              centred_features.T @ centred_targets / len(features))
    return weights, target_mean - feature_mean @ weights


def numpy_mse(features, targets, weights, bias) -> float:
    return float(((features @ weights + bias - targets) ** 2).mean())


def test_ridge_fit_matches_numpy_closed_form():
    features, targets = regression_data(10, samples=300)
    for l2 in (1e-4, 0.3):
        weights, bias = ridge_fit(cross_moments(features, targets), l2)
        expected_weights, expected_bias = numpy_ridge(features, targets, l2)
        np.testing.assert_allclose(weights.numpy(), expected_weights, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(bias.numpy(), expected_bias, rtol=1e-9, atol=1e-9)


def test_ridge_mse_from_moments_equals_the_direct_mean_of_squared_residuals():
    features, targets = regression_data(11, samples=257)
    moments = cross_moments(features, targets, batch_size=40)
    fitted = ridge_fit(moments, 1e-2)
    other = (torch.randn(10, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64))
    for weights, bias in (fitted, other):
        expected = numpy_mse(features, targets, weights.numpy(), bias.numpy())
        assert ridge_mse(moments, weights, bias) == pytest.approx(expected, rel=1e-9)


def test_reconstructing_the_features_themselves_has_zero_error():
    features, _ = regression_data(12, samples=400)
    moments = cross_moments(features, features)
    weights, bias = ridge_fit(moments, 1e-12)
    assert ridge_mse(moments, weights, bias) < 1e-8
    assert numpy_mse(features, features, weights.numpy(), bias.numpy()) < 1e-8


def test_choose_l2_picks_the_brute_force_best_on_held_out_data():
    grid = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    features, targets = regression_data(13, samples=200, dimension=30, noise=20.0)  # few samples: l2 matters
    fit_features, fit_targets, held_features, held_targets = features[:60], targets[:60], features[60:], targets[60:]
    errors = [numpy_mse(held_features, held_targets, *numpy_ridge(fit_features, fit_targets, l2)) for l2 in grid]
    best = grid[int(np.argmin(errors))]
    assert 1e-6 < best < 1.0, "the test data should make an interior l2 best"
    assert choose_l2(cross_moments(fit_features, fit_targets, 16), cross_moments(held_features, held_targets),
                     grid) == best


def test_cross_moments_do_not_depend_on_batch_size_or_order():
    features, targets = regression_data(14, samples=120)
    features = features + 1e3  # a large common offset, which the first batch's shift must absorb
    order = np.random.default_rng(15).permutation(120)
    reference = ridge_fit(cross_moments(features, targets, 120), 1e-3)
    halves = [cross_moments(features[part], targets[part], 9) for part in (slice(0, 50), slice(50, 120))]
    candidates = [cross_moments(features[order], targets[order], size) for size in (1, 7, 120)]
    candidates += [halves[0].merge(halves[1]), halves[1].merge(halves[0]), CrossMoments(10, 4).merge(halves[0])
                   .merge(halves[1])]
    for moments in candidates:
        assert moments.count == 120
        weights, bias = ridge_fit(moments, 1e-3)
        torch.testing.assert_close(weights, reference[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(bias, reference[1], rtol=1e-10, atol=1e-12)
        assert ridge_mse(moments, weights, bias) == pytest.approx(ridge_mse(moments, *reference), rel=1e-10)


def test_a_constant_layer_falls_back_to_predicting_the_target_mean():
    _, targets = regression_data(16, samples=50)
    moments = cross_moments(np.full((50, 10), 3.0), targets)  # trace 0: Cholesky fails, pseudo-inverse
    weights, bias = ridge_fit(moments, 1e-3)
    assert torch.count_nonzero(weights) == 0
    np.testing.assert_allclose(bias.numpy(), targets.mean(axis=0), rtol=1e-12)


# ---- transfer task, effective depth, pooling -----------------------------------------------------------

def test_colour_dominance_on_crafted_images():
    images = torch.zeros(5, 3, 2, 2, dtype=torch.uint8)
    images[0, 0], images[1, 1], images[2, 2] = 255, 255, 255  # pure red, green, blue
    images[3] = torch.tensor([[[255, 0], [0, 0]], [[90, 90], [90, 90]], [[10, 10], [10, 10]]])  # green by sum
    images[4] = torch.tensor([[[100, 100], [100, 100]], [[50, 50], [50, 50]], [[101, 100], [100, 100]]])
    expected = [0, 1, 2, 1, 2]
    unit = torch.zeros(3), torch.ones(3)  # normalised by mean 0 and std 1: pixels in [0, 1], no truncation
    assert colour_dominance_labels(images).tolist() == expected  # the raw sums (colour_dominance_raw)
    assert colour_dominance_labels(images, *unit).tolist() == expected  # the normalised ones (colour_dominance)
    assert colour_dominance_labels(images).dtype == colour_dominance_labels(images, *unit).dtype == torch.int64
    random_images = torch.randint(0, 256, (64, 3, 5, 5), dtype=torch.uint8)
    assert torch.equal(colour_dominance_labels(random_images, *unit), colour_dominance_labels(random_images))
    with pytest.raises(ValueError):
        colour_dominance_labels(torch.zeros(2, 4, 3, 3, dtype=torch.uint8))


def test_effective_depth_on_crafted_lists():
    assert effective_depth([0.2, 0.5, 0.95, 0.99, 1.0], 0.05) == 2
    assert effective_depth([0.5, 0.95, 0.99], 0.04) == 1  # 0.99 - 0.04 rounds above 0.95
    assert effective_depth([0.1, 0.3, 0.7], 0.0) == 2
    assert effective_depth([0.4, 0.8, 0.6], 0.0) == 1  # beating the last layer also counts
    assert effective_depth([0.9], 0.0) == 0
    with pytest.raises(ValueError):
        effective_depth([], 0.1)


def test_effective_depth_literal_against_a_float64_hand_computation():
    """Galanti et al.'s definition: the first layer whose NCC train error is <= ε, NaN when none is. Three
    layers of float64 features whose class separation grows with depth; NCC by hand in NumPy (two-pass
    centres, argmin of squared distances), the metric through the registry's across-layer row function."""
    import math
    from types import SimpleNamespace

    from metrics.depth import effective_depth_literal
    from metrics.registry import METRICS, LayerResults

    generator = np.random.default_rng(7)
    labels = np.arange(300) % 3
    directions = generator.normal(size=(3, 5))
    layers, accuracies = {}, []
    for index, separation in enumerate((0.3, 1.5, 12.0)):  # overlapping, partly separated, collapsed
        features = separation * directions[labels] + generator.normal(size=(300, 5))
        centres = np.stack([features[labels == c].mean(axis=0) for c in range(3)])
        distances = ((features[:, None, :] - centres[None]) ** 2).sum(axis=2)
        correct = float((distances.argmin(axis=1) == labels).sum())
        accuracies.append(correct / 300)
        name = f"block{index:02d}"
        layers[name] = LayerResults(name, ("train",), {"train": 300}, ncc_correct={"train": correct})
    assert accuracies[0] < 0.9 and accuracies[1] < 0.99 <= accuracies[2]  # a real test: only the last collapses
    expected = next(index for index, accuracy in enumerate(accuracies) if 1 - accuracy <= 0.01)  # by hand: 2
    options = SimpleNamespace(effective_depth_epsilon=0.01)
    (row,) = METRICS["effective_depth_literal"].function(layers, list(layers), options)
    assert row == {"layer": "all", "metric": "effective_depth_literal", "split": "train", "value": float(expected)}
    # ε = 1 − the middle layer's accuracy: it qualifies (float64 rounding forgiven), the first does not
    assert effective_depth_literal(accuracies, 1 - accuracies[1]) == 1.0
    assert effective_depth_literal([0.2, 0.5, 0.95, 0.99, 1.0], 0.05) == 2.0  # as effective_depth when the top is 100 %
    assert effective_depth_literal([0.5, 0.95, 0.99], 0.04) == 2.0  # error 0.05 > 0.04 (effective_depth says 1)
    assert math.isnan(effective_depth_literal([0.3, 0.6, 0.9], 0.05))  # no layer reaches 95 %: undefined
    assert effective_depth([0.3, 0.6, 0.9], 0.05) == 2  # while the other definition names the last layer
    assert math.isnan(effective_depth_literal([math.nan, 0.5], 0.1))
    with pytest.raises(ValueError):
        effective_depth_literal([], 0.1)
    with pytest.raises(ValueError):
        effective_depth_literal([1.0], -0.1)


def test_pool_to_shapes_and_hand_computation():
    features = torch.arange(2 * 3 * 4 * 4, dtype=torch.float64).reshape(2, 3, 4, 4)
    assert torch.equal(pool_to(features, 48), features.reshape(2, 48))  # fits: only flattened
    pooled = pool_to(features, 20)  # largest s with 3·s² ≤ 20 is 2
    expected = torch.tensor([[features[b, c, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean().item()
                              for c in range(3) for i in range(2) for j in range(2)] for b in range(2)])
    assert torch.equal(pooled, expected.double())
    assert pool_to(torch.zeros(1, 2, 2, 8), 20).shape == (1, 8)  # s capped by the short side
    wide = torch.arange(2 * 10 * 3 * 3, dtype=torch.float64).reshape(2, 10, 3, 3)
    channel_means = wide.mean(dim=(2, 3))  # C > max: global average, then groups of 3, 3, 3, 1 channels
    expected = torch.stack([channel_means[:, 0:3].mean(1), channel_means[:, 3:6].mean(1),
                            channel_means[:, 6:9].mean(1), channel_means[:, 9]], dim=1)
    torch.testing.assert_close(pool_to(wide, 4), expected, rtol=1e-15, atol=0)
    flat = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]])  # 2-D: consecutive groups
    assert pool_to(flat, 4).tolist() == [[2.5, 6.5, 10.5, 14.0]]
    tokens = flat.reshape(1, 3, 5)  # a token stream [B, width, tokens] (models/vit.py): groups of tokens per channel
    assert pool_to(tokens, 4).tolist() == [[3.0, 8.0, 13.0]]  # one group fits (3 · 1 <= 4): the token mean
    # two groups (3 · 2 <= 7): adaptive pooling's windows, tokens 0-2 and 2-4 of each channel
    assert pool_to(tokens, 7).tolist() == [[2.0, 4.0, 7.0, 9.0, 12.0, 14.0]]
    assert pool_to(torch.zeros(3, 7), 7).shape == (3, 7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_updates_on_cuda_never_synchronise_and_match_the_cpu():
    features, labels = classified_data(20, samples=200, offset=1e3)
    targets = np.eye(5)[labels]
    batches = [(torch.as_tensor(features[s:s + 32], dtype=torch.float32), torch.as_tensor(labels[s:s + 32]),
                torch.as_tensor(targets[s:s + 32])) for s in range(0, 200, 32)]
    on_cpu, on_cuda = (ClassMoments(5, 6), CrossMoments(6, 5)), (ClassMoments(5, 6, "cuda"), CrossMoments(6, 5, "cuda"))
    cuda_batches = [tuple(tensor.cuda() for tensor in batch) for batch in batches]
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation inside update() raises
    try:
        for batch_features, batch_labels, batch_targets in cuda_batches:
            on_cuda[0].update(batch_features, batch_labels)
            on_cuda[1].update(batch_features, batch_targets)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for batch_features, batch_labels, batch_targets in batches:
        on_cpu[0].update(batch_features, batch_labels)
        on_cpu[1].update(batch_features, batch_targets)
    torch.testing.assert_close(on_cuda[0].mean.cpu(), on_cpu[0].mean, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(on_cuda[0].scatter.cpu(), on_cpu[0].scatter, rtol=1e-12, atol=0)
    assert cdnv(on_cuda[0]) == pytest.approx(cdnv(on_cpu[0]), rel=1e-10)
    weights, bias = ridge_fit(on_cuda[1], 1e-3)
    torch.testing.assert_close(weights.cpu(), ridge_fit(on_cpu[1], 1e-3)[0], rtol=1e-9, atol=1e-12)
    assert ridge_mse(on_cuda[1], weights, bias) == pytest.approx(ridge_mse(on_cpu[1], *ridge_fit(on_cpu[1], 1e-3)),
                                                                  rel=1e-9)


def test_held_out_errors_from_one_eigendecomposition_equal_one_fit_per_l2():
    from metrics.ridge import L2_GRID, CrossMoments, held_out_errors, ridge_fit, ridge_mse

    generator = torch.Generator().manual_seed(3)
    features = torch.randn(300, 20, generator=generator, dtype=torch.float64) * 3 + 5
    features[:, -1] = features[:, 0] * 2  # rank-deficient, as pooled conv features often are
    targets = features @ torch.randn(20, 7, generator=generator, dtype=torch.float64) \
        + torch.randn(300, 7, generator=generator, dtype=torch.float64) * 4
    fit, held_out = CrossMoments(20, 7), CrossMoments(20, 7)
    fit.update(features[:240], targets[:240])
    held_out.update(features[240:], targets[240:])
    brute_force = [ridge_mse(held_out, *ridge_fit(fit, l2)) for l2 in L2_GRID]
    assert held_out_errors(fit, held_out) == pytest.approx(brute_force, rel=1e-8)


# ---- the engine: what each metric is computed against (metrics/engine.py) -------------------------------

class ProjectionModel(torch.nn.Module):
    """A fixed model with the engine's interface: features input, hidden (a random projection of the
    pixels to 8 dimensions: too few to reconstruct them exactly) and logits, in float64."""

    def __init__(self, pixels: int, classes: int):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.hidden = torch.randn(pixels, 8, generator=generator, dtype=torch.float64)
        self.head = torch.randn(8, classes, generator=generator, dtype=torch.float64)

    def features(self, images, point: str = "post_activation"):
        assert point == "post_activation"  # the engine asks for the analysis option's default
        hidden = images.flatten(1).to(torch.float64) @ self.hidden
        return {"input": images, "hidden": hidden, "logits": hidden @ self.head}


def grey_images(levels, generator, noise: float) -> torch.Tensor:
    """uint8 [N, 3, 4, 4]: every pixel of image i at levels[i], plus rounded Gaussian noise."""
    levels = np.asarray(levels, dtype=np.float64)[:, None, None, None]
    pixels = levels + noise * generator.normal(size=(len(levels), 3, 4, 4))
    return torch.as_tensor(np.clip(np.round(pixels), 0, 255).astype(np.uint8))


def measured(train_images, train_labels, test_images, test_labels, classes: int):
    """engine.measure of ProjectionModel, both splits normalised with the training split's statistics
    (as analysis.py does): ({(layer, metric, split): row}, that mean, that std as float64 arrays)."""
    from conf.analysis import Analysis
    from data import channel_statistics
    from metrics import engine

    mean, std = channel_statistics(train_images)
    train = engine.SplitData(train_images, torch.as_tensor(train_labels), mean, std)
    test = engine.SplitData(test_images, torch.as_tensor(test_labels), mean, std)
    rows = engine.measure(ProjectionModel(48, classes), train, test, classes, Analysis(probe_dimensions=64), seed=0)
    return {(row["layer"], row["metric"], row["split"]): row for row in rows}, mean.double().numpy(), std.double().numpy()


def test_the_decoder_reconstructs_the_normalised_image_on_both_splits():
    """reconstruction_mse = the ridge decoder's error on (x / 255 − mean) / std on both splits, as a float64
    NumPy reference: pixels at 200 ± 5 (std 5 / 255) make it (255 / 5)² ≈ 2600 times the error on pixels / 255."""
    generator = np.random.default_rng(30)
    train_images, test_images = (grey_images(np.full(count, 200.0), generator, noise=5.0) for count in (240, 120))
    rows, mean, std = measured(train_images, np.arange(240) % 3, test_images, np.arange(120) % 3, 3)
    projection = ProjectionModel(48, 3).hidden.numpy()

    def normalised(images):
        return ((images.double().numpy() / 255 - mean[:, None, None]) / std[:, None, None]).reshape(len(images), -1)

    l2 = rows[("hidden", "reconstruction_mse", "train")]["l2"]
    weights, bias = numpy_ridge(normalised(train_images) @ projection, normalised(train_images), l2)
    for split, images in (("train", train_images), ("test", test_images)):
        expected = numpy_mse(normalised(images) @ projection, normalised(images), weights, bias)
        assert 0.5 < expected < 1.0  # 8 projections of 48 unit-variance pixels leave most of them unexplained
        assert rows[("hidden", "reconstruction_mse", split)]["value"] == pytest.approx(expected, rel=1e-5), split


def test_test_split_ncc_classifies_by_the_training_split_centres():
    """NCC test accuracy uses the training centres (grey levels 100 and 150): the test split is brighter by 40,
    so its 30 class-0 images (140) lie nearer class 1's centre and only the 20 class-1 ones (190) are right:
    exactly 0.4 in every layer (the test split's own centres would give 1.0)."""
    generator = np.random.default_rng(31)
    train_labels, test_labels = np.arange(120) % 2, np.array([0] * 30 + [1] * 20)
    train_images = grey_images(100.0 + 50 * train_labels, generator, noise=2.0)
    test_images = grey_images(140.0 + 50 * test_labels, generator, noise=2.0)
    rows, _, _ = measured(train_images, train_labels, test_images, test_labels, 2)
    for layer in ("input", "hidden", "logits"):
        assert rows[(layer, "ncc_accuracy", "train")]["value"] == 1.0, layer
        assert rows[(layer, "ncc_accuracy", "test")]["value"] == 0.4, layer
