"""Neural collapse per layer (Papyan, Han & Donoho, PNAS 2020), measured at every layer as IntermediateNC
(Galanti et al., TMLR 2023) does: on the full flattened features, the same ones as NCC and CDNV.

    rows = engine.measure(model, train, test, num_classes,
                          Analysis(metrics="nc1,nc2_equinorm,nc4_ncc_agreement"), seed=0)

    nc1                  tr(Σ_W Σ_B⁺) / C on the training split: within-class variability against the
                         spread of the class means (0 = every sample at its class mean)
    nc2_equinorm         std_c ‖μ_c − μ_G‖ / mean_c ‖μ_c − μ_G‖, each split (0 = equal norms)
    nc2_equiangularity   std over pairs c ≠ c′ of cos(μ_c − μ_G, μ_c′ − μ_G), each split (0 = equal angles)
    nc2_etf_distance     mean over pairs of |cos + 1/(C − 1)|, each split (0 = a simplex ETF)
    nc4_ncc_agreement    fraction of examples whose NCC prediction (training centres) is the network's own
                         prediction, each split (1 = the classifier behaves as nearest class centre)

    nc3_self_duality     ‖W/‖W‖_F − Mᵀ/‖M‖_F‖²_F, W the head's final Linear [C, D], M = [μ_c − μ_G] of what
                         that Linear reads (the penultimate features), each split; one row, on layer `logits`
                         (0 = the classifier's rows are the centred class means, up to scale)

C counts the classes present in the split, μ_G is the mean over samples (the count-weighted mean of the
class means). Three statistics, registered with metrics/statistics.py: `within_class_projection`
(NC1's Mᵀ Σ_W M, streamed), `classifier_input` (NC3's class sums of the head's input, read by a hook on
its final Linear whichever `features_at` is chosen) and `ncc_agreement` (NC4's agreeing examples); NC2
reads the class moments alone. No D × D matrix is ever formed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metrics.moments import ClassMoments, one_hot
from metrics.registry import LayerResults, register
from metrics.statistics import PRECISION, Statistic, statistic

PAPER = "Papyan, Han & Donoho, PNAS 2020 (neural collapse); per layer as Galanti et al., TMLR 2023 (IntermediateNC)"
# NC1's pseudo-inverse keeps the singular values of M = [μ_c − μ_G] above this × max(C, D) × the largest (NumPy's
# matrix_rank rule): M is exact in float64 and its null direction (Σ_c n_c (μ_c − μ_G) = 0) comes out at
# ~1e-16 of the largest, so only a genuinely lower rank (class means in a smaller space) is cut.
RANK_TOLERANCE = torch.finfo(torch.float64).eps


# -- NC1: tr(Σ_W Σ_B⁺) / C ------------------------------------------------------------------------------------


def class_offsets(moments: ClassMoments) -> tuple[Tensor, Tensor]:
    """(present bool [C], offsets float64 [C, D]): μ_c − μ_G per class, 0 for absent classes, with μ_G the
    count-weighted mean of the class means (the mean over samples, Papyan et al.'s global mean)."""
    present = moments.count > 0
    weights = moments.count / moments.count.sum().clamp_min(1)
    centre = weights @ moments.mean
    offsets = torch.where(present.unsqueeze(1), moments.mean - centre, 0.0)
    return present, offsets


@statistic
class WithinClassProjection(Statistic):
    """NC1's streamed part, on the training split: P = Mᵀ Σ_W M · N (float64 [C, C]), with M = [μ_c − μ_G]
    (the columns `class_offsets` gives) and Σ_W · N = Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ.

    The class means are final only after the training pass, so P is gathered in `predict` from the kept
    training batches: d = h − μ_y in the batch precision, with μ_y split into its float32 part (gathered
    and subtracted, as ClassMoments subtracts its references) and the rest (applied after projecting, as a
    [C, C] table), so d keeps float32's relative precision however far the features sit from 0; then
    Mᵀd per example, and P summed in float64. Test batches are ignored: NC1 is a training-split measure.
    """

    name = "within_class_projection"
    requires = ("class_moments",)
    keeps = "flat"

    def __init__(self, arguments, context, precision=PRECISION):
        super().__init__(arguments, context)
        self.precision = precision
        self.products: Tensor | None = None  # P · N, float64 [C, C]
        self.tables: tuple[Tensor, Tensor, Tensor] | None = None  # set by fit, dropped after the training split

    def fit(self, statistics):
        moments = statistics["class_moments"].moments["train"]
        _, offsets = class_offsets(moments)
        means = moments.mean.to(self.precision)  # μ's part in the batch precision
        remainder = moments.mean - means.to(torch.float64)  # what that rounding left out (0 in float64)
        offsets = offsets.to(self.precision)
        correction = remainder @ offsets.to(torch.float64).T  # [C, C]: row y is (μ_y − means_y) · M
        self.tables = means, offsets, correction
        self.products = torch.zeros(moments.num_classes, moments.num_classes, dtype=torch.float64,
                                    device=moments.mean.device)

    def predict(self, batch, statistics):
        if batch.split != "train":
            self.tables = None  # the test split follows the training split: the tables are no longer read
            return
        means, offsets, correction = self.tables
        features = batch.flat.detach().to(device=means.device, dtype=self.precision)
        labels = batch.labels.to(device=means.device)
        residual = means.index_select(0, labels)
        torch.sub(features, residual, out=residual)  # h − μ_y (its float32 part), in place: the [B, D] pass
        projected = (residual @ offsets.T).to(torch.float64) - correction.index_select(0, labels)  # Mᵀd [B, C]
        self.products += projected.T @ projected


def within_over_between(moments: ClassMoments, products: Tensor) -> float:
    """NC1 = tr(Σ_W Σ_B⁺) / C from the training split's class moments and P · N (WithinClassProjection).

    With Σ_B = M Mᵀ / C over the C present classes and M = U S Vᵀ (thin SVD): Σ_B⁺ = C (M Mᵀ)⁺ and
    (M Mᵀ)⁺ = U S⁻² Uᵀ = M V S⁻⁴ Vᵀ Mᵀ (U = M V S⁻¹), so tr(Σ_W Σ_B⁺) / C = Σ_k s_k⁻⁴ (Vᵀ P V)_kk with
    P = Mᵀ Σ_W M: only C × C matrices. The largest C − 1 singular values are kept (Σ_B's rank is at most
    C − 1; code following Papyan et al. takes Σ_B's top C − 1 eigenpairs), those above RANK_TOLERANCE ×
    max(C, D) × the largest only; nan with fewer than 2 present classes or none kept (equal class means).
    """
    present, offsets = class_offsets(moments)
    offsets = offsets[present]
    if offsets.shape[0] < 2:
        return math.nan
    vectors, singular, _ = torch.linalg.svd(offsets, full_matrices=False)  # offsets = Mᵀ = V S Uᵀ: V first
    tolerance = RANK_TOLERANCE * max(offsets.shape) * singular[0]
    kept = (singular > tolerance) & (torch.arange(len(singular), device=singular.device) < offsets.shape[0] - 1)
    if not bool(kept.any()):
        return math.nan
    vectors, singular = vectors[:, kept], singular[kept]
    within = products[present][:, present] / moments.count.sum()  # P = Mᵀ Σ_W M
    return ((vectors.T @ within @ vectors).diagonal() / singular ** 4).sum().item()


@register("nc1", version=1, paper=PAPER, needs=("within_class_projection",))
def nc1(layer: LayerResults) -> dict[str, float]:
    """Papyan et al.'s NC1, tr(Σ_W Σ_B⁺) / C, on the training split only (they measure it on the training
    data; the labels are those the run trained on)."""
    scatter = layer.statistics["within_class_projection"]
    if scatter.products is None:
        return {}
    return {"train": within_over_between(layer.classes["train"], scatter.products)}


# -- NC2: equinorm and equiangularity of the centred class means --------------------------------------------


def class_mean_geometry(moments: ClassMoments) -> dict[str, float]:
    """Papyan et al.'s NC2 on one split's class means, centred on μ_G, present classes only:
    equinorm = std_c ‖μ_c − μ_G‖ / mean_c ‖μ_c − μ_G‖ (population std), equiangularity = std of the
    cosines over pairs c ≠ c′, etf_distance = mean over those pairs of |cos + 1/(C − 1)| (0 for a simplex
    equiangular tight frame). All nan with fewer than 2 present classes."""
    present, offsets = class_offsets(moments)
    offsets = offsets[present]
    classes = offsets.shape[0]
    if classes < 2:
        return dict.fromkeys(("equinorm", "equiangularity", "etf_distance"), math.nan)
    norms = offsets.norm(dim=1)
    directions = offsets / norms.unsqueeze(1)
    pairs = ~torch.eye(classes, dtype=torch.bool, device=offsets.device)
    cosines = (directions @ directions.T)[pairs]  # each pair twice: the same mean and std as once
    values = torch.stack([norms.std(correction=0) / norms.mean(), cosines.std(correction=0),
                          (cosines + 1 / (classes - 1)).abs().mean()]).tolist()
    return dict(zip(("equinorm", "equiangularity", "etf_distance"), values))


@register("nc2_equinorm", version=1, paper=PAPER, needs=("class_moments",))
def nc2_equinorm(layer: LayerResults) -> dict[str, float]:
    """Papyan et al.'s NC2 (equal norms): std_c ‖μ_c − μ_G‖ / mean_c ‖μ_c − μ_G‖, on each split's own means."""
    return {split: class_mean_geometry(moments)["equinorm"] for split, moments in layer.classes.items()}


@register("nc2_equiangularity", version=1, paper=PAPER, needs=("class_moments",))
def nc2_equiangularity(layer: LayerResults) -> dict[str, float]:
    """Papyan et al.'s NC2 (equal angles): std of cos(μ_c − μ_G, μ_c′ − μ_G) over pairs, each split."""
    return {split: class_mean_geometry(moments)["equiangularity"] for split, moments in layer.classes.items()}


@register("nc2_etf_distance", version=1, paper=PAPER, needs=("class_moments",))
def nc2_etf_distance(layer: LayerResults) -> dict[str, float]:
    """Papyan et al.'s NC2 (maximal angles): mean over pairs of |cos + 1/(C − 1)|, each split (0: a simplex ETF)."""
    return {split: class_mean_geometry(moments)["etf_distance"] for split, moments in layer.classes.items()}


# -- NC4: the network's predictions against the nearest class centre -----------------------------------------


@statistic
class NearestCentreAgreement(Statistic):
    """NC4's count per split: examples whose NCC prediction (the training split's centres, as the `ncc`
    statistic) equals the network's own prediction (its logits' argmax, Batch.network_predictions). Counted on
    the device, one scalar per split: no host synchronisation per batch."""

    name = "ncc_agreement"
    requires = ("ncc",)  # reads the ncc statistic's predictions of the same batch (it predicts first)
    keeps = "flat"

    def __init__(self, arguments, context):
        super().__init__(arguments, context)
        self.agreeing: dict[str, Tensor] = {}
        self.count: dict[str, int] = {}

    def predict(self, batch, statistics):
        if batch.network_predictions is None:  # a model without a `logits` layer: nothing to compare with
            return
        predictions = statistics["ncc"].predictions
        agreeing = (predictions == batch.network_predictions.to(predictions.device)).sum()
        self.agreeing[batch.split] = self.agreeing.get(batch.split, 0) + agreeing
        self.count[batch.split] = self.count.get(batch.split, 0) + len(predictions)


@register("nc4_ncc_agreement", version=1, paper=PAPER, needs=("ncc_agreement",))
def nc4_ncc_agreement(layer: LayerResults) -> dict[str, float]:
    """Papyan et al.'s NC4 at every layer: the fraction of examples where the nearest class centre (the
    training split's, as ncc_accuracy) predicts what the network predicts."""
    agreement = layer.statistics["ncc_agreement"]
    return {split: float(agreeing) / agreement.count[split] for split, agreeing in agreement.agreeing.items()}


# -- NC3: the classifier's weights against the class means of its input -----------------------------------


@statistic
class ClassifierInputMeans(Statistic):
    """NC3's class sums and counts of what the head's final Linear reads (Batch.classifier_inputs), per split,
    in float64: D is the classifier's input (at most a few thousand), C × B × D per batch is small."""

    name = "classifier_input"
    layers = ("logits",)

    def __init__(self, arguments, context):
        super().__init__(arguments, context)
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, Tensor] = {}

    def observe(self, batch, statistics):
        if batch.classifier_inputs is None:
            return
        assignment = one_hot(batch.labels, self.context.num_classes).to(torch.float64)
        sums = assignment.T @ batch.classifier_inputs.to(torch.float64)
        self.sums[batch.split] = self.sums[batch.split] + sums if batch.split in self.sums else sums
        self.counts[batch.split] = self.counts.get(batch.split, 0) + assignment.sum(dim=0)


def self_duality(weight: Tensor, sums: Tensor, counts: Tensor) -> float:
    """Papyan et al.'s NC3, ‖W/‖W‖_F − Mᵀ/‖M‖_F‖²_F, over the classes present (rows of W and of Mᵀ =
    [μ_c − μ_G], μ_G the mean over samples); 0 to 4; nan with fewer than 2 present classes."""
    present = counts > 0
    if int(present.sum()) < 2:
        return math.nan
    centre = sums.sum(dim=0) / counts.sum()
    offsets = sums[present] / counts[present].unsqueeze(1) - centre
    weight = weight.to(torch.float64)[present]
    return float(((weight / weight.norm() - offsets / offsets.norm()) ** 2).sum())


@register("nc3_self_duality", version=1, paper=PAPER, needs=("classifier_input",))
def nc3_self_duality(layer: LayerResults) -> dict[str, float]:
    """Papyan et al.'s NC3 on the `logits` layer: the classifier's rows against the centred class means of
    its input, each split's own means."""
    inputs = layer.statistics.get("classifier_input")  # gathered on `logits` only
    if inputs is None or inputs.context.classifier_weight is None:
        return {}
    weight = inputs.context.classifier_weight
    return {split: self_duality(weight, sums, inputs.counts[split]) for split, sums in inputs.sums.items()}
