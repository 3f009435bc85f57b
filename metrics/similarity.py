"""Representation similarity: linear CKA (Kornblith, Norouzi, Lee & Hinton, ICML 2019) and its debiased form
(Nguyen, Raghu & Kornblith, ICLR 2021; the unbiased HSIC of Song et al., JMLR 2012) between layers, over
training and between runs, from each checkpoint's *probe snapshot*.

    python analysis.py experiment=demo                      # snapshots + cka_previous_layer, similarity.parquet
    python analysis.py similarity RUN_DIR_A RUN_DIR_B       # every layer of A vs B at matching checkpoints

The probe subset is a fixed, seeded draw of `probe_subset_size` test examples (`probe_subset`: the same
indices for every run of a dataset, so runs can be compared); its pooled features (as the probes see them)
are kept per checkpoint and layer as the snapshot (metrics/snapshots.py writes it, float16). CKA is computed
from centred Gram matrices: K = X Xᵀ of the centred features (n × n, n the subset's size), so every pair of
layers costs an n² inner product once each layer's Gram is formed.
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


def probe_subset(examples: int, size: int) -> Tensor:
    """int64 [min(size, examples)], sorted: the probe subset's rows of a test split of `examples`. Seeded by
    a fixed key, never the run's seed: every run of a dataset gets the same examples, so their snapshots
    are comparable (`analysis.py similarity`)."""
    order = torch.randperm(examples, generator=seeded_generator(0, "probe subset"))
    return order[:min(size, examples)].sort().values


@statistic
class ProbeSnapshot(Statistic):
    """The probe subset's pooled features (float16, on the CPU at the end), gathered from the test split's
    pass in order: no extra forward pass. `features` [n, d] after the pass; None when the subset is empty."""

    kind = "probe_snapshot"
    options = ("features_at", "probe_dimensions", "probe_subset_size")

    def __init__(self, arguments, context):
        super().__init__(arguments, context)
        self.parts: list[Tensor] = []
        self.rows = [] if context.probe_rows is None else context.probe_rows.tolist()
        self.seen = 0  # test examples observed so far

    def observe(self, batch, statistics):
        if batch.split != "test":
            return
        start, size = self.seen, len(batch.labels)
        first, last = bisect.bisect_left(self.rows, start), bisect.bisect_left(self.rows, start + size)
        self.seen += size
        if first < last:
            local = torch.tensor([row - start for row in self.rows[first:last]]).to(batch.pooled.device, non_blocking=True)
            self.parts.append(batch.pooled.index_select(0, local).to(SNAPSHOT_DTYPE))

    @property
    def features(self) -> Tensor | None:
        return torch.cat(self.parts).cpu() if self.parts else None


# -- CKA --------------------------------------------------------------------------------------------------


def centred_gram(features: Tensor) -> Tensor:
    """float64 [n, n]: K = X Xᵀ of the column-centred features X [n, d] (= H K H of the raw Gram,
    Kornblith et al.'s centring), products in GRAM_PRECISION."""
    values = features.to(torch.float64)
    centred = (values - values.mean(dim=0)).to(GRAM_PRECISION)
    return (centred @ centred.T).to(torch.float64)


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


@register("cka_previous_layer", version=1, paper=KORNBLITH, needs=("probe_snapshot",), across_layers=True)
def cka_previous_layer(layers: dict[str, LayerResults], layer_names: list[str], options) -> list[dict]:
    """Linear CKA of each layer with the layer below it, on the probe subset of the test split: how much a
    layer changes the representation it receives (1 = only a rotation and scaling of it)."""
    present = [name for name in layer_names if layers[name].statistics.get("probe_snapshot") is not None]
    snapshots = {name: layers[name].statistics["probe_snapshot"].features for name in present}
    vectors = {name: normalised(centred_gram(features)) for name, features in snapshots.items() if features is not None}
    names = [name for name in present if name in vectors]
    return [{"layer": upper, "metric": "cka_previous_layer", "split": "test", "value": float(vectors[lower] @ vectors[upper])}
            for lower, upper in zip(names, names[1:])]
