"""Plasticity diagnostics per layer: dormant units, feature norm, and the rank of the features.

    rows = engine.measure(model, train, test, num_classes,
                          Analysis(metrics="dormant_fraction,feature_norm,effective_rank,srank"), seed=0)

    dormant_fraction   fraction of the layer's units whose mean |activation| is at most `dormant_threshold`
                       (τ, default 0.025) times the layer's mean over units, each split (Sokar, Agarwal,
                       Castro & Evci, ICML 2023). A unit is a channel of a conv layer (|a| averaged over
                       examples and positions) or a neuron of a linear one.
    feature_norm       mean over examples of ‖h‖₂ of the layer's flattened features, each split
    effective_rank     exp(H(p)), p = σ / Σσ, σ the singular values of the centred pooled features
                       (Roy & Vetterli, EUSIPCO 2007), each split
    srank              the smallest k with Σ_{i≤k} σ_i ≥ (1 − δ) Σ σ, δ = 0.01, σ sorted descending
                       (Kumar, Agarwal, Ghosh & Levine, ICLR 2021), each split

Two statistics (metrics/statistics.py). `unit_activity` streams Σ|a| per unit and Σ‖h‖₂ over
examples (one reduction per batch, float64 across batches, no host sync); it applies to the hidden
layers only: the `input` layer's pixels are not units and the `logits` are the classifier's outputs
(no activation follows them), so neither gets these two metrics. `spectrum` reads the ridge maps'
shared Gram of the pooled features (the probes' features; no pass of its own): it requires a ridge
with no target, which gathers the Gram alone when no probe or decoder is selected. It applies to every
layer, `input` and `logits` included. Features are taken at `features_at`; Sokar et al.'s units are
post-activation outputs (the default).

Edge cases, decided: a layer whose units are all silent has every unit dormant (fraction 1: the 0/0 of
s_u / mean s); features with no variance have effective rank and srank 0; non-finite features give nan.
The training split's spectrum comes from the ridge's first Gram, the same whichever maps are selected;
the test Gram takes the ridge's final precision, float64 on a layer whose maps were refitted in
float64 (metrics/engine.py), so there the test value can move at float32's rounding with the selection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metrics.cross_moments import RidgeMoments
from metrics.registry import LayerResults, register
from metrics.statistics import PRECISION, Statistic, statistic

SOKAR = "Sokar, Agarwal, Castro & Evci, ICML 2023 (dormant neurons)"
SRANK_DELTA = 0.01  # Kumar et al., ICLR 2021: the fraction of Σσ that srank may leave out
# An eigenvalue of the streamed covariance at or below (FLOOR_EPSILONS · eps(product precision) + D · eps(float64))
# times the largest is rounding, not data, and is set to 0 before σ = √λ. Measured on exactly low-rank
# features (rank 1 to 50, D = 64 to 512, n up to 50 000, offsets up to 1e4 × the spread): the rounding
# eigenvalues reach 3.4e-8 λ_max from float32 products (0.28 eps32; the floor, 1.2e-6, is 35× above)
# and 7e-16 λ_max from float64 ones (the floor, 1.6e-14 at D = 64, is 23× above). Without the floor a
# rank-1 layer read effective rank 1.07 (D = 256) and 1.13 with srank 14 (D = 512) from float32 products:
# σ = √λ lifts each rounding eigenvalue of 3e-8 λ_max to 2e-4 σ_max, and hundreds of them add up. The
# cost: a real eigenvalue below 1.2e-6 λ_max (σ below 1.1e-3 σ_max) reads as 0 from float32 products.
FLOOR_EPSILONS = 10


@dataclass(frozen=True)
class LayersBut:
    """Every layer but the named ones, as a Statistic's `layers` (the engine asks `name in layers`)."""

    excluded: tuple[str, ...]

    def __contains__(self, name: object) -> bool:
        return name not in self.excluded


# -- dormant units and feature norm ------------------------------------------------------------------------


@statistic
class UnitActivity(Statistic):
    """Σ|a| per unit (over examples and positions) and Σ‖h‖₂ over examples, per split: what dormant_fraction
    and feature_norm read. A unit is dimension 1 of the layer's output: a channel of [B, C, H, W], a
    neuron of [B, D]. Hidden layers only (module docstring)."""

    name = "unit_activity"
    layers = LayersBut(("input", "logits"))

    def __init__(self, arguments, context):
        super().__init__(arguments, context)
        self.activity: dict[str, Tensor] = {}  # split -> Σ|a| per unit, float64 [U] on the device
        self.norms: dict[str, Tensor] = {}  # split -> Σ over examples of ‖h‖₂, float64 scalar on the device
        self.count: dict[str, int] = {}  # split -> examples (known on the host: no synchronisation)
        self.positions = 1  # per unit and example: H·W for a conv layer, 1 for a linear one

    def observe(self, batch, statistics):
        # each batch reduced in float32 (float64 features stay float64), summed across batches in float64:
        # sums of non-negative terms, so the batch's rounding stays relative (about 1e-6 at most)
        features = batch.features.detach().to(torch.promote_types(batch.features.dtype, PRECISION))
        positions = list(range(2, features.dim()))
        activity = torch.linalg.vector_norm(features, ord=1, dim=[0, *positions]).to(torch.float64)
        norms = torch.linalg.vector_norm(features.flatten(1), dim=1).sum(dtype=torch.float64)
        split = batch.split
        if split in self.activity:
            self.activity[split] += activity
            self.norms[split] += norms
        else:
            self.activity[split], self.norms[split] = activity, norms
        self.count[split] = self.count.get(split, 0) + features.shape[0]
        self.positions = math.prod(features.shape[2:])

    def scores(self) -> dict[str, Tensor]:
        """{split: s_u = mean |a_u| over examples and positions, float64 [U]} (Sokar et al.'s unit score)."""
        return {split: total / (self.count[split] * self.positions) for split, total in self.activity.items()
                if self.count[split]}


def dormant_fraction_of(scores: Tensor, threshold: float) -> float:
    """Fraction of units u with s_u ≤ τ · mean_u' s_u'; nan when a score is not finite.

    Sokar et al.'s rule s_u / mean s ≤ τ, multiplied through by the mean: 0/0 is then decided on
    purpose. A layer whose units are all silent (every s_u = 0, mean 0) has every unit dormant, fraction
    1: a dead ReLU layer. With τ = 0 exactly the silent units are dormant."""
    mean = scores.mean()
    dormant = (scores <= threshold * mean).to(torch.float64).mean()
    value = torch.where(torch.isfinite(mean), dormant, torch.nan)
    return value.item()


@register("dormant_fraction", version=1, paper=SOKAR, needs=("unit_activity",), options=("dormant_threshold",))
def dormant_fraction(layer: LayerResults) -> dict[str, float]:
    """Fraction of dormant units of a hidden layer, each split: unit u is dormant when its mean |activation|
    (over the split's examples, and positions for a conv channel) is ≤ τ = `dormant_threshold` times the
    mean over the layer's units (Sokar et al., ICML 2023). None for `input` and `logits`."""
    activity = layer.statistics.get("unit_activity")
    if activity is None:  # input and logits: not units (UnitActivity.layers)
        return {}
    threshold = activity.context.options.dormant_threshold
    return {split: dormant_fraction_of(scores, threshold) for split, scores in activity.scores().items()}


@register("feature_norm", version=1, paper="mean ‖h‖₂ of the features (a plasticity diagnostic)",
          needs=("unit_activity",))
def feature_norm(layer: LayerResults) -> dict[str, float]:
    """Mean over the split's examples of ‖h‖₂, h the layer's output flattened; hidden layers only."""
    activity = layer.statistics.get("unit_activity")
    if activity is None:
        return {}
    return {split: norms.item() / activity.count[split] for split, norms in activity.norms.items()
            if activity.count[split]}


# -- the rank of the features --------------------------------------------------------------------------------


def singular_values(moments: RidgeMoments) -> Tensor:
    """σ_i ∝ √λ_i, descending, float64 [D] on the device: λ the eigenvalues of the feature covariance of
    `moments`, those at or below the rounding floor (FLOOR_EPSILONS) set to 0, tiny negatives included.
    The scale (σ_i = √(n λ_i) for the centred features) cancels in both metrics. All nan when the
    covariance is not finite (no host synchronisation)."""
    covariance = moments.feature_covariance()
    finite = torch.isfinite(covariance).all()
    eigenvalues = torch.linalg.eigvalsh(torch.where(finite, covariance, 0.0)).flip(0)
    relative = FLOOR_EPSILONS * torch.finfo(moments.precision).eps + len(eigenvalues) * torch.finfo(torch.float64).eps
    floor = relative * eigenvalues[0].clamp_min(0)
    kept = torch.where(eigenvalues > floor, eigenvalues, 0.0).sqrt()
    return torch.where(finite, kept, torch.nan)


@statistic
class FeatureSpectrum(Statistic):
    """Singular values of the centred pooled features, per split, from the ridge maps' shared Gram: the
    training split's from its two parts merged, the test split's from the test Gram (computed when first
    read: that Gram is complete only after the test pass). One eigvalsh per split."""

    name = "spectrum"
    options = ("features_at", "probe_dimensions")
    requires = ("ridge", "ridge_test")

    def __init__(self, arguments, context):
        super().__init__(arguments, context)
        self.singular: dict[str, Tensor] = {}  # split -> σ descending
        self.test = None  # the layer's RidgeTestMoments

    def fit(self, statistics):
        # the ridge's first Gram: its products (and precision) do not depend on which maps are selected, so
        # neither does the training split's spectrum (a later float64 refit of the maps is not read here)
        parts = statistics["ridge"].parts
        if parts is not None:
            fit, held_out = parts
            self.singular["train"] = singular_values(fit.merge(held_out))
        self.test = statistics["ridge_test"]

    def values(self) -> dict[str, Tensor]:
        """{split: σ descending}, the test split's computed on the first call after the test pass."""
        moments = None if self.test is None else self.test.moments
        if "test" not in self.singular and moments is not None and moments.count:
            self.singular["test"] = singular_values(moments)
        return self.singular


def spectrum_total(singular: Tensor) -> tuple[Tensor, float, float | None]:
    """(σ as float64 on the CPU, Σσ, the value of a rank when Σσ settles it: nan if not finite, 0 if 0, else None)."""
    singular = singular.detach().to("cpu", torch.float64)
    total = singular.sum().item()
    edge = math.nan if not math.isfinite(total) else 0.0 if total == 0 else None
    return singular, total, edge


def effective_rank_of(singular: Tensor) -> float:
    """exp(H(p)), p = σ / Σσ, H the Shannon entropy in nats (Roy & Vetterli, EUSIPCO 2007): between 1 (one
    direction) and D (equal σ). Features with no variance at all (Σσ = 0): 0, the rank of the zero matrix."""
    singular, total, edge = spectrum_total(singular)
    if edge is not None:
        return edge
    p = singular / total
    return math.exp(-torch.xlogy(p, p).sum().item())


def srank_of(singular: Tensor, delta: float = SRANK_DELTA) -> float:
    """The smallest k with Σ_{i≤k} σ_i ≥ (1 − δ) Σσ, σ descending (Kumar et al., ICLR 2021); 0 for features
    with no variance (k = 0 already covers Σσ = 0)."""
    singular, total, edge = spectrum_total(singular)
    if edge is not None:
        return edge
    return float((singular.cumsum(0) < (1 - delta) * total).sum().item() + 1)


@register("effective_rank", version=1, paper="Roy & Vetterli, EUSIPCO 2007 (effective rank)", needs=("spectrum",))
def effective_rank(layer: LayerResults) -> dict[str, float]:
    """exp of the entropy of the normalised singular values of the centred pooled features, each split
    (the training split's whole covariance, the test split's own); every layer."""
    return {split: effective_rank_of(singular) for split, singular in layer.statistics["spectrum"].values().items()}


@register("srank", version=1, paper="Kumar, Agarwal, Ghosh & Levine, ICLR 2021 (srank)", needs=("spectrum",))
def srank(layer: LayerResults) -> dict[str, float]:
    """Singular values of the centred pooled features needed for 99 % of their sum, each split; every layer."""
    return {split: srank_of(singular) for split, singular in layer.statistics["spectrum"].values().items()}
