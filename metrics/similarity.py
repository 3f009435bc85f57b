"""Representation similarity: linear CKA (Kornblith, Norouzi, Lee & Hinton, ICML 2019) and its debiased form
(Nguyen, Raghu & Kornblith, ICLR 2021; the unbiased HSIC of Song et al., JMLR 2012) between layers, over
training and between runs, from each checkpoint's *probe snapshot*.

    python analysis.py experiment=demo                      # snapshots + cka_previous_layer, similarity.parquet
    python analysis.py similarity RUN_DIR_A RUN_DIR_B       # every layer of A vs B at matching checkpoints

The probe subset is a fixed, seeded draw of `probe_subset_size` test examples (`probe_subset`: the same
indices for every run of a dataset, so runs can be compared); its pooled features (as the probes see them)
are kept per checkpoint and layer as the snapshot (measuring/snapshots.py writes it, float16). CKA is computed
from centred Gram matrices: K = X Xᵀ of the centred features (n × n, n the subset's size), so every pair of
layers costs an n² inner product once each layer's Gram is formed.

    python analysis.py metrics=all,cka_full                 # also CKA on the full flattened features (on request)

`cka_full` is Kornblith et al.'s CKA proper: the same subset's Grams formed from each layer's full flattened
features (`ProbeGram`), n² · D multiply-adds per layer of D features, kept for the checkpoint's rows only.
"""

from __future__ import annotations

import bisect

import torch
from torch import Tensor

from metrics.registry import LayerResults, register
from metrics.statistics import Statistic, statistic
from utils import seeded_generator

KORNBLITH = "Kornblith, Norouzi, Lee & Hinton, ICML 2019 (linear CKA)"
SNAPSHOT_DTYPE = torch.float16  # ~3 significant digits: CKA from it moves by ~1e-4 at most (tests/test_similarity.py)
# The Grams' products run in float32 (exact for float16 inputs, sums over d <= probe_dimensions terms);
# their inner products, norms and the debiasing run in float64.
GRAM_PRECISION = torch.float32
# Full features are centred in float64 a block of this many columns at a time: the float64 copy is n × 4096
# at most (32 MB for n = 1024), never n × D (an early conv layer's D is in the tens of thousands).
GRAM_COLUMNS = 4096
PROBE_STATISTICS = ("probe_snapshot", "probe_gram")  # the statistics read from the probe subset: none without one


def probe_subset(examples: int, size: int) -> Tensor:
    """int64 [min(size, examples)], sorted: the probe subset's rows of a test split of `examples`. Seeded by
    a fixed key, never the run's seed: every run of a dataset gets the same examples, so their snapshots
    are comparable (`analysis.py similarity`)."""
    order = torch.randperm(examples, generator=seeded_generator(0, "probe subset"))
    return order[:min(size, examples)].sort().values


class ProbeRows(Statistic):
    """A statistic of the probe subset's rows, taken from the test split's pass in order (no extra forward pass)."""

    def __init__(self, arguments, context):
        super().__init__(arguments, context)
        self.parts: list[Tensor] = []
        self.rows = [] if context.probe_rows is None else context.probe_rows.tolist()
        self.seen = 0  # test examples observed so far

    def subset_of(self, batch, features: str) -> Tensor | None:
        """The probe subset's rows of the test batch's `features` ("pooled" or "flat"; read only when the batch
        holds some), None for a training batch or a test batch without any."""
        if batch.split != "test":
            return None
        start, size = self.seen, len(batch.labels)
        first, last = bisect.bisect_left(self.rows, start), bisect.bisect_left(self.rows, start + size)
        self.seen += size
        if first == last:
            return None
        values = getattr(batch, features)
        local = torch.tensor([row - start for row in self.rows[first:last]]).to(values.device, non_blocking=True)
        return values.index_select(0, local)


@statistic
class ProbeSnapshot(ProbeRows):
    """The probe subset's pooled features (float16, on the CPU at the end), gathered from the test split's
    pass in order: no extra forward pass. `features` [n, d] after the pass; None when the subset is empty."""

    name = "probe_snapshot"
    options = ("features_at", "probe_dimensions", "probe_subset_size")

    def observe(self, batch, statistics):
        part = self.subset_of(batch, "pooled")
        if part is not None:
            self.parts.append(part.to(SNAPSHOT_DTYPE))

    @property
    def features(self) -> Tensor | None:
        return torch.cat(self.parts).cpu() if self.parts else None


@statistic
class ProbeGram(ProbeRows):
    """The probe subset's centred Gram of the layer's full flattened features, not pooled: `gram`, float64
    [n, n] (full_centred_gram), formed as soon as the test split's pass has reached the subset's last row; the
    features are then dropped. None when the subset is empty.

    Memory: until then the subset's full features are held, n × D in their own dtype, for every layer at once
    (the engine gathers all layers in the same pass): CONV-4-32 at 32 px (input 3 × 32 × 32, stem and four
    blocks 32 × 8 × 8, logits 10: D = 13,322 over its 7 layers) at n = 1024 holds 55 MB of float32 features,
    CONV-20-400 2.2 GB. Afterwards 8 MB (float64 n × n) per layer."""

    name = "probe_gram"
    options = ("features_at", "probe_subset_size")  # full features: probe_dimensions does not enter

    def __init__(self, arguments, context):
        super().__init__(arguments, context)
        self.gram: Tensor | None = None

    def observe(self, batch, statistics):
        part = self.subset_of(batch, "flat")
        if part is None:
            return
        self.parts.append(part)
        if self.seen > self.rows[-1]:  # the subset is complete: keep its Gram alone
            features, self.parts = torch.cat(self.parts), []
            self.gram = full_centred_gram(features)


# -- CKA --------------------------------------------------------------------------------------------------


def centred_gram(features: Tensor) -> Tensor:
    """float64 [n, n]: K = X Xᵀ of the column-centred features X [n, d] (= H K H of the raw Gram,
    Kornblith et al.'s centring), products in GRAM_PRECISION."""
    values = features.to(torch.float64)
    centred = (values - values.mean(dim=0)).to(GRAM_PRECISION)
    return (centred @ centred.T).to(torch.float64)


def full_centred_gram(features: Tensor) -> Tensor:
    """float64 [n, n]: centred_gram of features [n, D] of any width, a block of GRAM_COLUMNS columns at a
    time: each block centred in float64 (the column means over all n rows), its product in GRAM_PRECISION (or
    the features' own, if finer), the blocks' products summed in float64. Kornblith et al.'s K = X Xᵀ of the
    centred full features: n² · D multiply-adds."""
    mean = features.sum(dim=0, dtype=torch.float64) / len(features)
    precision = torch.promote_types(features.dtype, GRAM_PRECISION)
    gram = torch.zeros(len(features), len(features), dtype=torch.float64, device=features.device)
    for start in range(0, features.shape[1], GRAM_COLUMNS):
        columns = slice(start, start + GRAM_COLUMNS)
        centred = (features[:, columns].to(torch.float64) - mean[columns]).to(precision)
        gram += centred @ centred.T
    return gram


def unbiased_centred(gram: Tensor) -> Tensor:
    """The Gram centred for the unbiased HSIC estimator (Song et al. 2012; the debiased CKA of Nguyen et al.
    2021): diagonal zeroed, then each row and column less its mean over the off-diagonal entries, corrected
    so that <A, B> / (n (n − 3)) of two such matrices is the U-statistic HSIC."""
    examples = gram.shape[0]
    centred = gram.clone()
    centred.fill_diagonal_(0)
    means = centred.sum(dim=0) / (examples - 2)
    means -= means.sum() / (2 * (examples - 1))
    centred -= means.unsqueeze(0) + means.unsqueeze(1)
    centred.fill_diagonal_(0)
    return centred


def normalised(matrix: Tensor) -> Tensor:
    """The matrix flattened and divided by its Frobenius norm (nan when it is 0: a constant layer)."""
    flat = matrix.flatten()
    return flat / flat.norm()


def cka_vectors(features: Tensor) -> tuple[Tensor, Tensor]:
    """(linear, debiased) normalised Gram vectors of one layer's snapshot: the CKA of two layers is the dot
    product of their vectors (debiased needs n > 3 examples)."""
    gram = centred_gram(features)
    return normalised(gram), normalised(unbiased_centred(gram))


def linear_cka(first: Tensor, second: Tensor) -> float:
    """Linear CKA of two snapshots of the same examples: ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F), centred."""
    return float(cka_vectors(first)[0] @ cka_vectors(second)[0])


def previous_layer_rows(metric: str, vectors: dict[str, Tensor]) -> list[dict]:
    """A row per layer but the first of `vectors` (normalised Gram vectors in depth order): its linear CKA with
    the layer before it, on the test split's probe subset (NaN next to a constant layer)."""
    names = list(vectors)
    return [{"layer": upper, "metric": metric, "split": "test", "value": float(vectors[lower] @ vectors[upper])}
            for lower, upper in zip(names, names[1:])]


@register("cka_previous_layer", version=1, paper=KORNBLITH, needs=("probe_snapshot",), across_layers=True)
def cka_previous_layer(layers: dict[str, LayerResults], layer_names: list[str], options) -> list[dict]:
    """Linear CKA of each layer with the layer below it, on the probe subset of the test split: how much a
    layer changes the representation it receives (1 = only a rotation and scaling of it)."""
    present = [name for name in layer_names if layers[name].statistics.get("probe_snapshot") is not None]
    snapshots = {name: layers[name].statistics["probe_snapshot"].features for name in present}
    return previous_layer_rows("cka_previous_layer", {name: normalised(centred_gram(features))
                                                      for name, features in snapshots.items() if features is not None})


# On request: its Grams (n² · D multiply-adds per layer and checkpoint) added 9 % to a default analysis of
# CONV-4-32 on 5000 training images (one CPU thread), and it holds every layer's full features of the subset
# during the pass: n · ΣD floats, 2.2 GB for CONV-20-400 (docs/analysis.md).
@register("cka_full", version=1, paper=KORNBLITH, needs=("probe_gram",), across_layers=True, on_request=True)
def cka_full(layers: dict[str, LayerResults], layer_names: list[str], options) -> list[dict]:
    """cka_previous_layer on the full flattened features, as Kornblith et al. define CKA: pooling to
    probe_dimensions can move it by tenths (0.36 pooled vs 0.66 full, the input against a third conv layer)."""
    grams = {name: getattr(layers[name].statistics.get("probe_gram"), "gram", None) for name in layer_names}
    return previous_layer_rows("cka_full", {name: normalised(gram) for name, gram in grams.items() if gram is not None})
