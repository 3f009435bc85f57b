"""python -m pytest tests/test_activity.py -q — the plasticity diagnostics of metrics/activity.py: dormant
units and feature norm (the `unit_activity` statistic), effective rank and srank (the `spectrum` statistic on the
ridge maps' shared Gram), each against a float64 NumPy reference written here or an analytic value,
and through the engine (metrics/engine.py)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import metrics.activity
from conf import parse_arguments
from conf.analysis import Analysis
from conf.errors import SettingsError
from conf.global_settings import describe_accepted, show_default
from metrics import engine, registry
from metrics.activity import (FeatureSpectrum, UnitActivity, dormant_fraction_of, effective_rank_of,
                              singular_values, srank_of)
from metrics.ridge import RidgeMoments
from metrics.statistics import Batch, Context, closure
from tests.fabricate import ENGINE_MEAN, ENGINE_STD, class_images, keyed

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see tests/conftest.py

ACTIVITY_METRICS = ("dormant_fraction", "feature_norm", "effective_rank", "srank")
UNEVEN = (7, 50, 1, 33, 19, 64, 5, 23, 11, 40, 27)  # 280 rows in uneven batches
# feature_norm: each batch reduced in float32, summed across batches in float64. Measured against the
# float64 reference on the crafted activations below (10 draws, conv and linear): at most 7e-9 relative;
# asserted at 1e-7.
NORM_TOLERANCE = 1e-7
# effective_rank from the engine's float32 Gram against NumPy's SVD of the centred features in float64
# (SpectrumModel, 4 draws): at most 5.2e-6 relative on `mixed`, whose smallest eigenvalue is 8e-6 λ_max
# (the float32 products' rounding is about 3e-8 λ_max), 7e-8 on the other layers; asserted at 1e-4.
RANK_TOLERANCE = 1e-4


def context(options: Analysis | None = None) -> Context:
    return Context(3, 0, options or Analysis(), 0, torch.device("cpu"))


def split_batches(features: torch.Tensor, split: str):
    start = 0
    for size in UNEVEN:
        rows = features[start:start + size]
        start += size
        yield Batch(split, rows, torch.zeros(len(rows), dtype=torch.int64), {}, {}, probe_dimensions=64)


def gathered_activity(splits: dict[str, torch.Tensor], options: Analysis | None = None) -> registry.LayerResults:
    """A layer's LayerResults with UnitActivity fed each split's features in uneven batches."""
    activity = UnitActivity(frozenset(), context(options))
    for split, features in splits.items():
        for batch in split_batches(features, split):
            activity.observe(batch, {})
    counts = {split: len(features) for split, features in splits.items()}
    return registry.LayerResults("block00", ("train", "test"), counts, statistics={"unit_activity": activity})


# ---- float64 NumPy references ------------------------------------------------------------------------------

def numpy_unit_scores(features) -> np.ndarray:
    """Sokar et al.'s s_u: mean |a| over examples (and positions for a conv map), float64 [U]."""
    values = np.abs(np.asarray(features, dtype=np.float64))
    return values.mean(axis=(0, *range(2, values.ndim)))


def numpy_dormant_fraction(features, threshold: float) -> float:
    scores = numpy_unit_scores(features)
    return float(np.mean(scores / scores.mean() <= threshold))


def numpy_feature_norm(features) -> float:
    values = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    return float(np.linalg.norm(values, axis=1).mean())


def numpy_singular_values(features) -> np.ndarray:
    values = np.asarray(features, dtype=np.float64)
    return np.linalg.svd(values - values.mean(axis=0), compute_uv=False)  # descending


def numpy_effective_rank(singular: np.ndarray) -> float:
    p = singular / singular.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def numpy_srank(singular: np.ndarray, delta: float = 0.01) -> int:
    cumulative = np.cumsum(singular)
    return int(np.argmax(cumulative >= (1 - delta) * singular.sum()) + 1)


def srank_margin(singular: np.ndarray, delta: float = 0.01) -> float:
    """How far, relative to Σσ, the cumulative sums nearest the srank's threshold are from it."""
    cumulative, threshold = np.cumsum(singular), (1 - delta) * singular.sum()
    return float(np.abs(cumulative - threshold).min() / singular.sum())


# ---- crafted activations -------------------------------------------------------------------------------------

# Per-unit scales: exactly zero, tiny, clearly below τ = 0.025 of the mean, clearly above it, ordinary.
UNIT_SCALES = (0.0, 1e-6, 0.01, 0.05, 0.5, 1.0, 1.0, 2.0, 3.0, 4.0)


def crafted(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """float32 [N, U, ...]: |Gaussian| times UNIT_SCALES per unit (dimension 1), a ReLU-like layer. In a
    conv map, unit 3 (not dormant) is active at its first position only, with the same channel mean: its
    other positions, taken one by one, would be silent."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=generator, dtype=torch.float64).abs()
    scales = torch.tensor(UNIT_SCALES, dtype=torch.float64).reshape(1, -1, *([1] * (len(shape) - 2)))
    values = values * scales
    if len(shape) == 4:
        positions = shape[2] * shape[3]
        corner = values[:, 3, 0, 0] * positions
        values[:, 3] = 0
        values[:, 3, 0, 0] = corner
    return values.float()


@pytest.mark.parametrize("shape", [(280, 10, 3, 5), (280, 10)], ids=["conv", "linear"])
def test_dormant_fraction_and_feature_norm_match_numpy(shape):
    splits = {"train": crafted(shape, seed=1), "test": crafted(shape, seed=2)}
    for threshold, expected in ((0.025, 3), (0.0, 1), (0.1, 4)):  # dormant units by construction
        layer = gathered_activity(splits, Analysis(dormant_threshold=threshold))
        values = metrics.activity.dormant_fraction(layer)
        assert list(values) == ["train", "test"]
        assert layer.statistics["unit_activity"].scores()["train"].shape == (10,)  # a unit per channel
        for split, features in splits.items():
            ratios = numpy_unit_scores(features) / numpy_unit_scores(features).mean()
            if threshold:  # no unit within 20 % of the edge (τ = 0: the silent unit sits on it, by design)
                assert np.abs(ratios - threshold).min() > 0.2 * threshold, (split, ratios)
            assert values[split] == numpy_dormant_fraction(features, threshold) == expected / 10
    norms = metrics.activity.feature_norm(gathered_activity(splits))
    for split, features in splits.items():
        assert norms[split] == pytest.approx(numpy_feature_norm(features), rel=NORM_TOLERANCE, abs=0)


def test_a_silent_layer_has_every_unit_dormant_and_a_zero_norm():
    """0/0 decided on purpose: every score 0 (mean 0) makes every unit dormant, at any threshold."""
    silent = torch.zeros(280, 6, 2, 2)
    for threshold in (0.0, 0.025, 1.0):
        layer = gathered_activity({"train": silent, "test": silent[:50]}, Analysis(dormant_threshold=threshold))
        assert metrics.activity.dormant_fraction(layer) == {"train": 1.0, "test": 1.0}
    assert metrics.activity.feature_norm(layer) == {"train": 0.0, "test": 0.0}
    assert dormant_fraction_of(torch.tensor([0.0, 1.0, math.nan], dtype=torch.float64), 0.025) != 0.0  # nan


def test_dormant_threshold_enters_only_the_dormant_fraction_recipe_and_is_range_checked():
    before = registry.recipes(Analysis())
    after = registry.recipes(Analysis(dormant_threshold=0.05))
    assert {name for name in before if before[name] != after[name]} == {"dormant_fraction"}
    for option, value, changed in (("probe_dimensions", 32, {"effective_rank", "srank"}),
                                   ("features_at", "pre_activation", set(ACTIVITY_METRICS))):
        after = registry.recipes(dataclasses.replace(Analysis(), **{option: value}))
        assert {name for name in ACTIVITY_METRICS if before[name] != after[name]} == changed, option
    assert "dormant_threshold" in registry.METRICS["dormant_fraction"].depends_on()
    for value, reason in ((-0.01, "is out of range"), (1.5, "is out of range"), (math.nan, "is not finite")):
        with pytest.raises(SettingsError, match=rf"^dormant_threshold={value} {reason}; accepted: a finite number "
                                                r">= 0.0 and <= 1.0$"):
            Analysis(dormant_threshold=value)
    with pytest.raises(SettingsError) as raised:
        parse_arguments(["dormant_threshold=2"], analysis=True)
    assert str(raised.value) == "dormant_threshold=2.0 is out of range; accepted: a finite number >= 0.0 and <= 1.0"
    assert parse_arguments(["dormant_threshold=0.1"], analysis=True).analysis.dormant_threshold == 0.1
    item = next(field for field in dataclasses.fields(Analysis) if field.name == "dormant_threshold")
    assert (show_default(item), describe_accepted(item)) == ("0.025", "a finite number >= 0.0 and <= 1.0")


# ---- effective rank and srank ------------------------------------------------------------------------------

def streamed(features: torch.Tensor, precision=torch.float32, batch: int = 500) -> RidgeMoments:
    """The features' Gram as the engine gathers it: products in `precision` per batch, float64 sums."""
    moments = RidgeMoments(features.shape[1], {}, precision=precision)
    for start in range(0, len(features), batch):
        moments.update(features[start:start + batch].to(precision), {})
    return moments


def test_isotropic_features_have_effective_rank_near_their_dimension():
    """d = 8 Gaussian dimensions of equal variance, n = 20 000: the sample σ differ from equal by about
    √(d/n) = 2 %, which costs effective rank d − 3.7e-4 to d − 5.5e-4 (measured, 5 draws); asserted within
    8e-3. srank = d: d − 1 nearly equal values hold only 7/8 of Σσ, far below 99 %."""
    features = torch.randn(20_000, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 5 + 2
    singular = singular_values(streamed(features.float()))
    assert effective_rank_of(singular) == pytest.approx(8, abs=8e-3)
    assert effective_rank_of(singular) < 8  # exp(H) reaches d only for exactly equal σ
    assert srank_of(singular) == 8


@pytest.mark.parametrize("precision", [torch.float32, torch.float64])
def test_rank_one_features_have_effective_rank_one_and_srank_one(precision):
    """x = z v + c, D = 256: one direction of variance. The rounding eigenvalues of the other 255 are set
    to 0 by the floor (metrics/activity.py: FLOOR_EPSILONS), so both ranks are exactly 1."""
    generator = torch.Generator().manual_seed(4)
    direction, offset = torch.randn(256, generator=generator, dtype=torch.float64), torch.rand(256, generator=generator)
    features = torch.randn(6000, 1, generator=generator, dtype=torch.float64) * direction + 3 * offset
    singular = singular_values(streamed(features.float(), precision))
    assert (effective_rank_of(singular), srank_of(singular)) == (1.0, 1.0)


def test_without_the_floor_float32_rounding_inflates_the_rank_of_rank_one_features(monkeypatch):
    """What the floor is for (so the test above can fail): from float32 products, the 255 rounding
    eigenvalues (about 3e-8 λ_max) lifted by σ = √λ hold about 1 % of Σσ."""
    generator = torch.Generator().manual_seed(4)
    direction, offset = torch.randn(256, generator=generator, dtype=torch.float64), torch.rand(256, generator=generator)
    features = torch.randn(6000, 1, generator=generator, dtype=torch.float64) * direction + 3 * offset
    monkeypatch.setattr(metrics.activity, "FLOOR_EPSILONS", 0)  # only the eigensolver term, D · eps64, is left
    singular = singular_values(streamed(features.float()))
    assert effective_rank_of(singular) > 1.05


def test_a_constant_layer_has_rank_zero_and_a_nan_layer_nan():
    constant = singular_values(streamed(torch.ones(300, 5)))
    assert torch.equal(constant, torch.zeros(5, dtype=torch.float64))
    assert (effective_rank_of(constant), srank_of(constant)) == (0.0, 0.0)
    broken = torch.randn(300, 5)
    broken[17, 2] = math.nan
    singular = singular_values(streamed(broken))
    assert math.isnan(effective_rank_of(singular)) and math.isnan(srank_of(singular))


class SpectrumModel(torch.nn.Module):
    """The engine's interface with crafted layers: `mixed` maps the normalised image (48 pixels) through
    singular values spread over two decades to 24 dimensions, `hidden` is a ReLU layer of 16. Every layer
    (`input`: 48) fits in probe_dimensions=64, so the pooled features are the flat ones."""

    def __init__(self, pixels: int = 48, classes: int = 3):
        super().__init__()
        generator = torch.Generator().manual_seed(5)
        left = torch.linalg.qr(torch.randn(pixels, 24, generator=generator, dtype=torch.float64))[0]
        right = torch.linalg.qr(torch.randn(24, 24, generator=generator, dtype=torch.float64))[0]
        self.mixed = (left * torch.logspace(0, -2, 24, dtype=torch.float64) @ right).float()
        self.hidden = torch.randn(pixels, 16, generator=generator)
        self.head = torch.randn(16, classes, generator=generator)

    def features(self, images, point: str = "post_activation"):
        flat = images.flatten(1)
        hidden = torch.relu(flat @ self.hidden)
        return {"input": images, "mixed": flat @ self.mixed + 7.0, "hidden": hidden, "logits": hidden @ self.head}


def test_effective_rank_and_srank_from_the_engine_match_numpy_svd():
    """Against NumPy's SVD of the centred float64 features (the model's float32 output, cast): effective
    rank within RANK_TOLERANCE (float32 Gram products), srank exactly (no cumulative sum near its edge)."""
    import data

    train, test = class_images(600, 3, seed=6), class_images(240, 3, seed=7)
    model, options = SpectrumModel(), Analysis(probe_dimensions=64, analysis_batch_size=100, heldout_fraction=0.2)
    rows = keyed(engine.measure(model, train, test, 3, options, seed=0, metrics=("effective_rank", "srank")))
    for split, images in (("train", train.images), ("test", test.images)):
        features = model.features(data.normalize(images, ENGINE_MEAN, ENGINE_STD))
        for layer in ("input", "mixed", "hidden", "logits"):
            singular = numpy_singular_values(features[layer].flatten(1))
            assert srank_margin(singular) > 1e-4, (layer, split)
            measured = rows[(layer, "effective_rank", split)]
            assert measured == pytest.approx(numpy_effective_rank(singular), rel=RANK_TOLERANCE, abs=0), (layer, split)
            assert rows[(layer, "srank", split)] == numpy_srank(singular), (layer, split)
    assert rows[("mixed", "srank", "train")] < 24 < rows[("input", "srank", "train")]  # the spectra differ


# ---- through the engine --------------------------------------------------------------------------------------

def tiny_convnet(classes: int = 3):
    import models
    from conf import Settings

    torch.manual_seed(0)
    return models.build(Settings(arch="convnet", depth=2, width=4), input_shape=(3, 8, 8), num_classes=classes).eval()


def test_measure_gives_exactly_the_four_metrics_on_their_layers_for_both_splits():
    train, test = class_images(120, 3, seed=0, size=8), class_images(60, 3, seed=1, size=8)
    options = Analysis(metrics=",".join(ACTIVITY_METRICS), probe_dimensions=64, analysis_batch_size=50)
    rows = keyed(engine.measure(tiny_convnet(), train, test, 3, options, seed=0))
    hidden, every = ("stem", "block00", "block01"), ("input", "stem", "block00", "block01", "logits")
    expected = {(layer, metric, split) for split in ("train", "test")
                for metric, layers in (("dormant_fraction", hidden), ("feature_norm", hidden),
                                       ("effective_rank", every), ("srank", every)) for layer in layers}
    assert set(rows) == expected
    assert all(math.isfinite(value) for value in rows.values())
    assert all(0 <= rows[(layer, "dormant_fraction", split)] <= 1 for layer, _, split in expected if layer in hidden)
    assert all(rows[(layer, "feature_norm", split)] > 0 for layer, _, split in expected if layer in hidden)
    assert all(1 <= rows[(layer, "effective_rank", split)] <= rows[(layer, "srank", split)] + 1e-9
               or rows[(layer, "srank", split)] == 0 for layer, _, split in expected)


def test_a_dead_relu_layer_is_all_dormant_with_no_norm_and_no_rank():
    """block00 of an MLP pushed below zero before its ReLU: every unit silent; the logits, a function of
    it alone, are constant (rank 0 too)."""
    import models
    from conf import Settings

    torch.manual_seed(0)
    model = models.build(Settings(arch="mlp", depth=2, width=8), input_shape=(3, 4, 4), num_classes=3).eval()
    block = model.blocks[0]
    with torch.no_grad():
        (block.norm if hasattr(block, "norm") else block.linear).bias.fill_(-1e3)
    train, test = class_images(120, 3, seed=2), class_images(60, 3, seed=3)
    options = Analysis(probe_dimensions=64, analysis_batch_size=50)
    rows = keyed(engine.measure(model, train, test, 3, options, seed=0, metrics=ACTIVITY_METRICS))
    for split in ("train", "test"):
        assert rows[("block00", "dormant_fraction", split)] == 1.0
        assert rows[("block00", "feature_norm", split)] == 0.0
        assert rows[("block00", "effective_rank", split)] == rows[("block00", "srank", split)] == 0.0
        assert rows[("logits", "effective_rank", split)] == 0.0


def test_effective_rank_with_the_decoder_is_measured_on_the_input_layer_too(monkeypatch):
    """The decoder's target is skipped on `input`; the spectrum's ridge is then built there with no target
    (engine.layer_statistics) and gathers the Gram alone, without the eigenbasis the maps' l2 needs."""
    train, test = class_images(120, 3, seed=8, size=8), class_images(60, 3, seed=9, size=8)
    options = Analysis(probe_dimensions=64, analysis_batch_size=50)
    chosen = ("effective_rank", "reconstruction_mse")
    both = keyed(engine.measure(tiny_convnet(), train, test, 3, options, 0, metrics=chosen))
    assert {(layer, split) for layer, metric, split in both if metric == "effective_rank"} == {
        (layer, split) for layer in ("input", "stem", "block00", "block01", "logits") for split in ("train", "test")}
    assert "input" not in {layer for layer, metric, _ in both if metric == "reconstruction_mse"}
    statistics_needed = closure(["ridge_test:image", "spectrum"])
    built = engine.layer_statistics("input", statistics_needed, context(options))
    assert {name: statistic.arguments for name, statistic in built.items()} == {
        "ridge": frozenset(), "ridge_test": frozenset(), "spectrum": frozenset()}
    assert engine.layer_statistics("stem", statistics_needed, context(options))["ridge"].arguments == {"image"}
    assert "ridge" not in engine.layer_statistics("input", closure(["ridge_test:image"]), context(options))

    def no_eigenbasis(moments):
        raise AssertionError("a Gram-only ridge chose no l2: it needs no eigenbasis")

    monkeypatch.setattr("metrics.statistics.eigenbasis", no_eigenbasis)
    alone = keyed(engine.measure(tiny_convnet(), train, test, 3, options, 0, metrics=("effective_rank",)))
    assert alone == {key: value for key, value in both.items() if key[1] == "effective_rank"}  # bitwise
    assert isinstance(engine.collect(tiny_convnet(), train, test, 3, options, 0, needs=["spectrum"])["input"]
                      .statistics["spectrum"], FeatureSpectrum)
