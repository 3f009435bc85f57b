"""Streamed sufficient statistics for closed-form ridge regression: one feature Gram shared by every
target (RidgeMoments), a target batch shared by every layer (Target), one target's view (CrossMoments).

    moments = RidgeMoments(512, {"classes": 10, "image": 3072}, precision=torch.float32)
    moments.update(features, {"classes": one_hot, "image": images.flatten(1)})   # per batch, no host sync
    decoder = moments.view("image")                                             # a CrossMoments
    mean_x, mean_t, scatter_xx, scatter_xt, scatter_tt = decoder.centred()

Precision: each batch's products are taken in `precision` (float32 in the engine: the floor any exact
decoder pays) on data centred by the stream's shift, and summed across batches in float64. Centring
first keeps float32's relative rounding relative to the spread of the data, not to its mean; the
engine keeps float64 for layers where that does not hold (metrics/statistics.py). The solvers that
read these moments are in metrics/ridge.py.
"""

from __future__ import annotations

import torch
from torch import Tensor

STAGED_BATCHES = 32  # batch products summed in the product precision before each float64 flush (see RidgeMoments)


class RidgeMoments:
    """Streamed sufficient statistics of features X [B, D] and named targets T [B, K_name]: n, Σx, XᵀX
    (shared), and per target Σt, XᵀT, Σ‖t‖², all shifted by the first batch's means.

    Every sum is over (x − feature_shift) and (t − target_shift): centring later (XᵀX − Σx Σxᵀ / n) then
    only cancels the small offset of the data mean from the first batch's mean, not the raw mean. The
    products of up to STAGED_BATCHES batches are summed in place in the product precision (a fused
    multiply-add, no temporary) and then added to the float64 sums: float64 additions of D×K per batch
    would cost as much as the products themselves. Summing k products in float32 adds a rounding of
    about √k u to each, below that of one product over B rows (about √B u; u = 6e-8).
    """

    def __init__(self, dimension: int, targets: dict[str, int], device=None, precision=torch.float64,
                 shift_like: "RidgeMoments | None" = None):
        """`shift_like`: another stream of the same features (the fitting part of a split, for its held-out
        part) whose shifts this one adopts, so that merging the two is a plain sum."""
        self.dimension, self.targets, self.precision, self.shift_like = dimension, dict(targets), precision, shift_like
        zeros = lambda *shape, dtype=torch.float64: torch.zeros(*shape, dtype=dtype, device=device)  # noqa: E731
        self.count = 0  # the batch sizes are known on the host: a Python int costs no synchronisation
        self.feature_shift, self.feature_sum = zeros(dimension), zeros(dimension)
        self.target_shift = {name: zeros(width) for name, width in self.targets.items()}
        self.target_sum = {name: zeros(width) for name, width in self.targets.items()}
        self.target_square_sum = {name: zeros(()) for name in self.targets}
        self._gram = zeros(dimension, dimension)
        self._raw = {name: zeros(dimension, width) for name, width in self.targets.items()}  # Σ(x − s) tᵀ
        self._gram_stage, self._stage = None, None  # the products in `precision`, allocated by the first update
        self._staged, self._cross = 0, None
        self.centred_cache: dict[str, tuple] = {}  # CrossMoments.centred of each target, by count

    def _flush(self) -> None:
        if self._staged:
            self._gram += self._gram_stage
            self._gram_stage.zero_()
            for name, stage in self._stage.items():
                self._raw[name] += stage
                stage.zero_()
            self._staged = 0

    @property
    def feature_gram(self) -> Tensor:
        """Σ(x − s)(x − s)ᵀ [D, D] float64."""
        self._flush()
        return self._gram

    @property
    def cross(self) -> dict[str, Tensor]:
        """{target: Σ(x − s)(t − a)ᵀ} = Σ(x − s) tᵀ − Σ(x − s) aᵀ: the shift a is the stream's, the same
        for every batch, so its term is applied once here rather than per batch."""
        self._flush()
        if self._cross is None:
            self._cross = {name: torch.addr(self._raw[name], self.feature_sum, self.target_shift[name], alpha=-1)
                           for name in self.targets}
        return self._cross

    def update(self, features: Tensor, targets: dict) -> None:
        """Add a batch: features [B, D] and every target [B, K] (any float dtypes), or a Target (the same
        targets prepared once for every layer that reads them)."""
        self._check(features, targets)
        if features.shape[0] == 0:
            return
        device, precision = self._gram.device, self.precision
        features = features.detach().to(device=device, dtype=precision)
        targets = {name: self._target(name, targets[name]) for name in self.targets}
        if self.count == 0:  # the shift rounded to the product precision, so the shifted sums are exact about it
            like = self.shift_like
            self.feature_shift = like.feature_shift if like is not None and like.count else features.mean(dim=0).to(torch.float64)
            for name, target in targets.items():
                self.target_shift[name] = target.shift
        features = features - self.feature_shift.to(precision)
        if self._stage is None:
            self._gram_stage = torch.zeros_like(self._gram, dtype=precision)
            self._stage = {name: torch.zeros_like(raw, dtype=precision) for name, raw in self._raw.items()}
        self.count += features.shape[0]
        self.feature_sum += features.sum(dim=0).to(torch.float64)
        self._gram_stage.addmm_(features.T, features)
        for name, target in targets.items():
            target_sum, square_sum = target.sums_about(self.target_shift[name], precision)
            self.target_sum[name] += target_sum
            self.target_square_sum[name] += square_sum
            # the targets (normalised images, one-hot) are not shifted per layer: only the features are
            # centred before the product (see `cross`)
            self._stage[name].addmm_(features.T, target.values.to(precision))
        self._staged, self._cross = self._staged + 1, None
        self.centred_cache = {}
        if self._staged == STAGED_BATCHES:
            self._flush()

    def _target(self, name: str, values) -> "Target":
        if isinstance(values, Target):
            return values
        values = values.detach().to(device=self._gram.device, dtype=self.precision)
        if self.count:
            return Target(values, self.target_shift[name])
        like = self.shift_like
        if like is not None and like.count:  # the other part's shift: merging the two is then a plain sum
            return Target(values, like.target_shift[name])
        # the first batch's mean, in the product precision (so the sums are exact about the shift)
        return Target(values, values.mean(dim=0).to(torch.float64))

    def _check(self, features: Tensor, targets: dict) -> None:
        shapes = {name: (features.shape[0], width) for name, width in self.targets.items()}
        if (features.dim() != 2 or features.shape[1] != self.dimension or targets.keys() < self.targets.keys()
                or any(tuple(targets[name].shape) != shape for name, shape in shapes.items())):
            raise ValueError(f"expected features [B, {self.dimension}] and targets {shapes}, got "
                             f"{tuple(features.shape)} and { {name: tuple(value.shape) for name, value in targets.items()} }")

    def merge(self, other: "RidgeMoments") -> "RidgeMoments":
        """Both streams together, expressed with the first non-empty one's shifts (neither operand changes)."""
        if (other.dimension, other.targets) != (self.dimension, self.targets):
            raise ValueError("cannot merge moments of different shapes")
        first, second = (self, other) if self.count > 0 else (other, self)
        if second.count and second.feature_shift is first.feature_shift and all(
                second.target_shift[name] is first.target_shift[name] for name in self.targets):
            return first._plus(second)
        merged = first.copy()
        if second.count == 0:
            return merged
        # Re-shift the second stream's sums: Σ(x − a) = Σ(x − b) + n (b − a), and likewise for products;
        # streams that share their shifts (the parts of one split) just add.
        n, outer = second.count, torch.outer
        same_features = second.feature_shift is merged.feature_shift
        feature_offset = torch.zeros_like(merged.feature_sum) if same_features else second.feature_shift - merged.feature_shift
        raw = merged._raw
        for name in self.targets:
            same = same_features and second.target_shift[name] is merged.target_shift[name]
            target_offset, target_sum = second.target_shift[name] - merged.target_shift[name], second.target_sum[name]
            if same:
                raw[name] += second._raw_flushed()[name]
            else:
                raw[name] = (merged.cross[name] + second.cross[name] + outer(second.feature_sum, target_offset)
                             + outer(feature_offset, target_sum) + n * outer(feature_offset, target_offset)
                             + outer(merged.feature_sum + second.feature_sum + n * feature_offset, merged.target_shift[name]))
            merged.target_sum[name] += target_sum + n * target_offset
            merged.target_square_sum[name] += (second.target_square_sum[name] + 2 * target_offset @ target_sum
                                               + n * target_offset.square().sum())
        merged.count += n
        merged._gram += second.feature_gram
        if not same_features:
            merged._gram += (outer(second.feature_sum, feature_offset) + outer(feature_offset, second.feature_sum)
                             + n * outer(feature_offset, feature_offset))
        merged.feature_sum += second.feature_sum + n * feature_offset
        merged._cross, merged.centred_cache, merged.shift_like = None, {}, None
        return merged

    def _plus(self, other: "RidgeMoments") -> "RidgeMoments":
        """Both streams, when they share every shift: each sum is the sum of the two (no copy first)."""
        self._flush()
        other._flush()
        total = RidgeMoments.__new__(RidgeMoments)
        total.__dict__.update(vars(self))
        total.count, total.shift_like, total._cross, total.centred_cache = self.count + other.count, None, None, {}
        total._gram_stage, total._stage, total._staged = None, None, 0
        total.feature_sum, total._gram = self.feature_sum + other.feature_sum, self._gram + other._gram
        total.target_shift = dict(self.target_shift)
        for field in ("target_sum", "target_square_sum", "_raw"):
            setattr(total, field, {name: value + getattr(other, field)[name] for name, value in getattr(self, field).items()})
        return total

    def _raw_flushed(self) -> dict[str, Tensor]:
        self._flush()
        return self._raw

    def copy(self) -> "RidgeMoments":
        """An independent copy (its staged products flushed)."""
        self._flush()
        duplicate = RidgeMoments.__new__(RidgeMoments)
        for name, value in vars(self).items():
            if name in ("_stage", "_gram_stage"):
                value = None  # flushed: a later update allocates its own
            elif torch.is_tensor(value) and name not in ("feature_shift",):
                value = value.clone()
            elif name in ("targets", "target_shift"):  # the shifts are shared, never changed in place
                value = dict(value)
            elif isinstance(value, dict) and name != "centred_cache":
                value = {key: item.clone() if torch.is_tensor(item) else item for key, item in value.items()}
            setattr(duplicate, name, value)
        duplicate.centred_cache = {}
        return duplicate

    def only(self, name: str) -> "RidgeMoments":
        """The moments of the features and one target (sharing the Gram), as a RidgeMoments of their own."""
        self._flush()
        alone = RidgeMoments.__new__(RidgeMoments)
        alone.__dict__.update(vars(self))
        alone.targets = {name: self.targets[name]}
        for field in ("target_shift", "target_sum", "target_square_sum", "_raw"):
            setattr(alone, field, {name: getattr(self, field)[name]})
        alone._stage, alone._gram_stage = None, None
        alone._cross, alone.centred_cache = None, {}
        return alone

    def view(self, name: str) -> "CrossMoments":
        """The moments of the features and one target, sharing this object's tensors (no copy)."""
        return CrossMoments.of(self, name)

    def feature_covariance(self) -> Tensor:
        """[D, D] float64: Σ(x − x̄)(x − x̄)ᵀ / n."""
        if self.count == 0:
            raise ValueError("no samples: update() was never given a non-empty batch")
        return (self.feature_gram - torch.outer(self.feature_sum, self.feature_sum) / self.count) / self.count


class Target:
    """One batch of one target [B, K] and a shift, with its sums about the shift computed once (per
    precision) however many layers' moments read it: Σ(t − shift) [K] and Σ‖t − shift‖² (float64)."""

    def __init__(self, values: Tensor, shift: Tensor):
        self.values, self.shift = values, shift
        self._sums: dict[torch.dtype, tuple[Tensor, Tensor]] = {}

    @property
    def shape(self):
        return self.values.shape

    def sums_about(self, shift: Tensor, precision: torch.dtype) -> tuple[Tensor, Tensor]:
        """(Σ(t − shift), Σ‖t − shift‖²) reduced in `precision`, re-expressed from this target's own shift
        when they differ (Σ(t − a) = Σ(t − b) + n (b − a), and likewise for the squares)."""
        if precision not in self._sums:
            centred = self.values.to(precision) - self.shift.to(precision)
            self._sums[precision] = centred.sum(dim=0).to(torch.float64), centred.square().sum().to(torch.float64)
        total, square_sum = self._sums[precision]
        if shift is self.shift:
            return total, square_sum
        offset, count = self.shift - shift, self.values.shape[0]
        return total + count * offset, square_sum + 2 * offset @ total + count * offset.square().sum()


class CrossMoments:
    """The streamed moments of (X [B, D], T [B, K]) for one ridge map: a RidgeMoments with one target,
    or one target's view of a shared one (`RidgeMoments.view`)."""

    TARGET = "target"

    def __init__(self, dimension: int, targets: int, device=None, precision=torch.float64):
        self.moments, self.name = RidgeMoments(dimension, {self.TARGET: targets}, device, precision), self.TARGET

    @classmethod
    def of(cls, moments: RidgeMoments, name: str) -> "CrossMoments":
        view = cls.__new__(cls)
        view.moments, view.name = moments, name
        return view

    def update(self, features: Tensor, targets: Tensor) -> None:
        """Add a batch: features [B, D] and targets [B, K], any float dtypes."""
        self.moments.update(features, {self.name: targets})

    def merge(self, other: "CrossMoments") -> "CrossMoments":
        """Both streams together (neither operand changes)."""
        if (other.dimension, other.targets) != (self.dimension, self.targets):
            raise ValueError("cannot merge moments of different shapes")
        return CrossMoments.of(self._alone().merge(other._alone()), self.name)

    def _alone(self) -> RidgeMoments:
        """This target's moments as a RidgeMoments of its own (the shared Gram, this target only)."""
        return self.moments if self.moments.targets.keys() == {self.name} else self.moments.only(self.name)

    dimension = property(lambda self: self.moments.dimension)
    targets = property(lambda self: self.moments.targets[self.name])
    count = property(lambda self: self.moments.count)
    feature_shift = property(lambda self: self.moments.feature_shift)
    feature_sum = property(lambda self: self.moments.feature_sum)
    feature_gram = property(lambda self: self.moments.feature_gram)
    target_shift = property(lambda self: self.moments.target_shift[self.name])
    target_sum = property(lambda self: self.moments.target_sum[self.name])
    cross = property(lambda self: self.moments.cross[self.name])
    target_square_sum = property(lambda self: self.moments.target_square_sum[self.name])

    def feature_covariance(self) -> Tensor:
        return self.moments.feature_covariance()

    def centred(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Feature mean [D], target mean [K] and centred sums Σ(x−x̄)(x−x̄)ᵀ [D, D], Σ(x−x̄)(t−t̄)ᵀ [D, K], Σ‖t−t̄‖²
        (kept until the moments change: the fits and errors of one map read them several times)."""
        if self.count == 0:
            raise ValueError("no samples: update() was never given a non-empty batch")
        cached = self.moments.centred_cache.get(self.name)
        if cached is None or cached[0] != self.count:
            cached = self.moments.centred_cache[self.name] = (self.count, self._centred())
        return cached[1]

    def _centred(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        n, feature_sum, target_sum = self.count, self.feature_sum, self.target_sum
        feature_scatter = torch.addr(self.feature_gram, feature_sum, feature_sum, alpha=-1 / n)
        # Σ(x − s) tᵀ − Σ(x − s)(a + Σ(t − a)/n)ᵀ in one fused pass over the D×K sums
        raw = self.moments._raw_flushed()[self.name]
        cross_scatter = torch.addr(raw, feature_sum, self.target_shift + target_sum / n, alpha=-1)
        target_scatter = self.target_square_sum - target_sum.square().sum() / n
        return (self.feature_shift + feature_sum / n, self.target_shift + target_sum / n,
                feature_scatter, cross_scatter, target_scatter)
