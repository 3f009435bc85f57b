"""Per-layer statistics as plug-ins: each metric declares what it needs, the engine gathers the union.

A need is `statistic` or `statistic:argument` (metrics/registry.py declares them per metric):

    class_moments             per-class count, mean and scatter of the layer's features, each split
    ncc                       correct nearest-class-centre predictions (training split's centres), each split
    ridge:<target>            a closed-form ridge map from the pooled features to <target>, fitted on the
                              training split (one Gram XᵀX shared by every target), with its moments there
    ridge_test:<target>       the map's moments on the test split too (its test error; the decoder's)
    ridge_correct:<target>    correct argmax predictions of the map, each split (the probes' accuracies)
    classifier                the network's own loss and accuracy, on the `logits` layer
    batch_statistics          the network's correct test predictions with BatchNorm on each batch's own
                              statistics (train-mode BN, all else eval mode), on the `logits` layer

Targets: `classes` (one-hot of the labels the run trained on), `image` (the normalised input image:
LearnPhase's linear decoder), `transfer` (one-hot of the transfer task's labels).

A statistic is a class registered here (under its `name`), built once per layer with the set of its
arguments. The engine (metrics/engine.py) runs: the training split's pass (`observe`), `fit`, the training
split again from the kept features (`predict`; a statistic names what it needs kept in `keeps`), then the
test split's pass (`observe`, then `predict`, per batch). Adding a statistic = one class here; adding a
metric on existing statistics = one function in metrics/registry.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as functional
from torch import Tensor

from metrics.moments import ClassMoments, NearestCentres
from metrics.pooling import pool_to
from metrics.ridge import CrossMoments, RidgeMoments, choose_l2, eigenbasis, fitted_error, ridge_fit
from metrics.trained import train_linear_map

TARGETS = ("classes", "image", "transfer")
TARGET_OPTIONS = {"transfer": ("transfer_task", "transfer_dataset")}  # what else a target's values depend on
RIDGE_OPTIONS = ("features_at", "probe_dimensions", "heldout_fraction", "linear_maps")
# A layer whose within-class scatter is below this fraction of its total scatter on the first training
# batch keeps its ridge products in float64: there the maps fit the one-hot classes almost exactly
# and float32 products lose the tiny residual (tests/test_statistics.py measures both sides: on
# near-collapsed features the float32 probe error was 6-52 % off float64's, on ordinary ones within
# 1e-6). Collapsed layers are IntermediateNC's subject, so they get the exact path.
COLLAPSE_RATIO = 1e-2
PRECISION = torch.float32  # each batch's reductions and products; every sum across batches is float64
# A map fitted from float32 products whose training residual is below this fraction of the target's
# variance is fitted again from float64 products (metrics/engine.py): its error is then the small
# difference of large terms, where float32's rounding (~1e-6 of them) would show.
RESIDUAL_RATIO = 1e-3


@dataclass
class Batch:
    """One batch of one split of one layer, as every statistic sees it."""

    split: str
    features: Tensor  # the layer's output [B, ...]
    labels: Tensor  # int64 [B]: the labels the run trained on (training split), or the true ones (test)
    targets: dict  # metrics.ridge.Target [B, K] per target name present (shared by every layer)
    target_labels: dict[str, Tensor]  # int64 [B]: "classes" and "transfer" when present
    probe_dimensions: int
    parts: tuple[slice, slice] | None = None  # training split: its fitting rows, then its held-out rows
    part_targets: tuple[dict, dict] | None = None  # the targets of each part (metrics.ridge.Target)
    network_predictions: Tensor | None = None  # int64 [B]: the network's own class (argmax of its logits)
    classifier_inputs: Tensor | None = None  # float [B, D]: what the head's final Linear reads (NC3), when gathered
    # float [B, C]: the logits with BatchNorm on this batch's own statistics (test split, when gathered; None for a
    # batch of one example, which has no batch statistics)
    batch_statistics_logits: Tensor | None = None

    @functools.cached_property
    def flat(self) -> Tensor:
        return self.features.flatten(1)

    @functools.cached_property
    def pooled(self) -> Tensor:
        return pool_to(self.features, self.probe_dimensions)


@dataclass
class LinearMap:
    """A fitted map (weights [D, K], bias [K]) of one target, its chosen relative l2 (nan when trained by
    gradients), its data's moments and its correct argmax predictions per split."""

    weights: Tensor
    bias: Tensor
    l2: float
    dimensions: int
    precision: torch.dtype  # of the products its errors are computed with (ridge_mse)
    moments: dict[str, CrossMoments] = field(default_factory=dict)
    correct: dict[str, Tensor] = field(default_factory=dict)  # split -> correct predictions (a device scalar)
    count: dict[str, int] = field(default_factory=dict)  # split -> examples predicted


class Statistic:
    """One per-layer statistic. `statistics` is the layer's {name: Statistic} (what `requires` names)."""

    name: ClassVar[str]  # what needs and `requires` call it (registered under it)
    version: ClassVar[int] = 1  # bump when what it gathers changes: the metrics reading it are computed again
    options: ClassVar[tuple[str, ...]] = ("features_at",)  # the analysis options its values depend on (the recipe)
    requires: ClassVar[tuple[str, ...]] = ()  # statistics (with this one's arguments) it reads
    keeps: ClassVar[str | None] = None  # "flat" | "pooled": what `predict` reads of the training split
    layers: ClassVar[tuple[str, ...] | None] = None  # the layers it applies to (None: every layer)

    def __init__(self, arguments: frozenset[str], context: "Context"):
        self.arguments, self.context = arguments, context

    def observe(self, batch: Batch, statistics: dict) -> None:
        """Accumulate one batch of either split (the training split's first, whole, then the test's)."""

    def fit(self, statistics: dict) -> None:
        """After the training split's pass."""

    def predict(self, batch: Batch, statistics: dict) -> None:
        """After `fit`: the training split's kept batches, then each test batch after its `observe`."""


@dataclass(frozen=True)
class Context:
    """What every statistic of one analysis shares."""

    num_classes: int
    transfer_classes: int
    options: object  # conf.analysis.Analysis
    seed: int
    device: torch.device
    probe_rows: Tensor | None = None  # int64, sorted, on the CPU: the test split's probe subset (metrics/similarity.py)
    classifier_weight: Tensor | None = None  # float [C, D]: the head's final Linear weight W (NC3)


STATISTICS: dict[str, type[Statistic]] = {}


def statistic(cls: type[Statistic]) -> type[Statistic]:
    if cls.name in STATISTICS:
        raise ValueError(f"statistic {cls.name!r} is registered twice")
    STATISTICS[cls.name] = cls
    return cls


def need_options(need: str) -> tuple[str, ...]:
    """The analysis options a need's values depend on: its statistic's, those of what it requires, its target's."""
    name, argument = parse_need(need)
    options = [*STATISTICS[name].options, *TARGET_OPTIONS.get(argument, ())]
    for required in STATISTICS[name].requires:
        options += need_options(f"{required}:{argument}" if argument else required)
    return tuple(dict.fromkeys(options))


def need_versions(need: str) -> dict[str, int]:
    name, argument = parse_need(need)
    versions = {name: STATISTICS[name].version}
    for required in STATISTICS[name].requires:
        versions.update(need_versions(f"{required}:{argument}" if argument else required))
    return versions


def parse_need(need: str) -> tuple[str, str | None]:
    name, _, argument = need.partition(":")
    if name not in STATISTICS:
        raise ValueError(f"unknown statistic {need!r}; known statistics: {', '.join(STATISTICS)}")
    if argument and argument not in TARGETS:
        raise ValueError(f"unknown target in {need!r}; known targets: {', '.join(TARGETS)}")
    return name, argument or None


def closure(needs) -> dict[str, frozenset[str]]:
    """{statistic name: its arguments} for `needs` and everything they require, in the order they are
    gathered."""
    wanted: dict[str, set[str]] = {}

    def add(name: str, argument: str | None) -> None:
        for required in STATISTICS[name].requires:
            add(required, argument)
        wanted.setdefault(name, set())
        if argument:
            wanted[name].add(argument)

    for need in needs:
        add(*parse_need(need))
    return {name: frozenset(arguments) for name, arguments in wanted.items()}


# -- the statistics ------------------------------------------------------------------------------------


@statistic
class ClassStatistics(Statistic):
    """IntermediateNC's class moments of the full (flattened) features, per split."""

    name = "class_moments"

    def __init__(self, arguments, context):
        super().__init__(arguments, context)
        self.moments: dict[str, ClassMoments] = {}

    def observe(self, batch, statistics):
        moments = self.moments.get(batch.split)
        if moments is None:
            moments = self.moments[batch.split] = ClassMoments(self.context.num_classes, batch.flat.shape[1],
                                                               self.context.device, PRECISION)
        moments.update(batch.flat, batch.labels)


@statistic
class NearestCentre(Statistic):
    """Correct NCC predictions per split, against the training split's centres (IntermediateNC)."""

    name = "ncc"
    requires = ("class_moments",)
    keeps = "flat"

    def __init__(self, arguments, context):
        super().__init__(arguments, context)
        self.correct: dict[str, Tensor] = {}
        self.rule: NearestCentres | None = None
        self.predictions: Tensor | None = None  # the last batch's

    def predict(self, batch, statistics):
        if self.rule is None:  # the training split's centres, prepared once for every batch
            train = statistics["class_moments"].moments["train"]
            self.rule = NearestCentres(train.mean, train.count > 0, PRECISION)
        predictions = self.predictions = self.rule.predict(batch.flat)  # this batch's, for NC4 (metrics/collapse.py)
        self.correct[batch.split] = self.correct.get(batch.split, 0) + (predictions == batch.labels).sum()


@statistic
class RidgeMaps(Statistic):
    """Ridge maps from the pooled features to each target argument, fitted on the training split: one
    shared Gram on the fitting part and one on the held-out part (l2 chosen there), refitted on both."""

    name = "ridge"
    version = 2  # products in float32 per batch on centred data, one Gram shared by every target
    options = RIDGE_OPTIONS

    def __init__(self, arguments, context, precision=None):
        super().__init__(arguments, context)
        self.parts: tuple[RidgeMoments, RidgeMoments] | None = None
        self.precision = precision  # None: chosen on the first batch
        self.maps: dict[str, LinearMap] = {}
        self.kept: list[tuple[Tensor, dict[str, Tensor]]] = []  # gradient-trained maps only
        self.needs_float64 = False  # set by fit: a map fitted almost exactly from float32 products

    def observe(self, batch, statistics):
        if batch.split != "train":
            return
        pooled = batch.pooled
        if self.parts is None:
            if self.precision is None:
                self.precision = torch.float64 if collapsed(pooled, batch.labels, self.context.num_classes) else PRECISION
            widths = {name: batch.targets[name].shape[1] for name in self.arguments}
            fit = RidgeMoments(pooled.shape[1], widths, self.context.device, self.precision)
            self.parts = fit, RidgeMoments(pooled.shape[1], widths, self.context.device, self.precision, shift_like=fit)
        for moments, rows, targets in zip(self.parts, batch.parts, batch.part_targets):
            moments.update(pooled[rows], {name: targets[name] for name in self.arguments})
        if self.arguments and self.context.options.linear_maps != "closed_form":
            self.kept.append((pooled, {name: batch.targets[name].values for name in self.arguments}))

    def fit(self, statistics):
        fit, held_out = self.parts
        whole = fit.merge(held_out)
        closed_form = self.context.options.linear_maps == "closed_form"
        # one eigendecomposition for every target's l2; none for a Gram-only ridge (no argument: metrics/activity.py)
        basis = eigenbasis(fit) if closed_form and self.arguments else None
        for name in sorted(self.arguments):
            if closed_form:
                l2 = choose_l2(fit.view(name), held_out.view(name), basis=basis, precision=self.precision)
                weights, bias = ridge_fit(whole.view(name), l2)
            else:
                l2, (weights, bias) = float("nan"), self._trained(name)
            self.maps[name] = LinearMap(weights, bias, l2, whole.dimension, self.precision, {"train": whole.view(name)})
        self.needs_float64 = self.precision != torch.float64 and any(
            residual_fraction(fitted.moments["train"], fitted.weights, fitted.l2) < RESIDUAL_RATIO
            for fitted in self.maps.values() if closed_form)
        self.kept.clear()

    def _trained(self, name: str) -> tuple[Tensor, Tensor]:
        """LearnPhase's way, for parity: gradient descent on the kept features (no l2 to choose)."""
        inputs = torch.cat([pooled for pooled, _ in self.kept])
        targets = torch.cat([targets[name] for _, targets in self.kept]).to(torch.float64)
        with torch.enable_grad():  # the engine runs under no_grad; this map learns by gradients
            return train_linear_map(inputs, targets, optimizer=self.context.options.linear_maps, seed=self.context.seed)


def residual_fraction(moments: CrossMoments, weights: Tensor, l2: float) -> float:
    """The training error of a closed-form ridge fit ÷ the target's scatter (one host sync)."""
    target_scatter = moments.centred()[4]
    error, target_scatter = torch.stack([fitted_error(moments, weights, l2), target_scatter]).tolist()
    return error / target_scatter if target_scatter > 0 else 1.0


def collapsed(pooled: Tensor, labels: Tensor, num_classes: int) -> bool:
    """Within-class scatter below COLLAPSE_RATIO of the total, on one batch (float64; one host sync per layer)."""
    moments = ClassMoments(num_classes, pooled.shape[1], pooled.device)
    moments.update(pooled, labels)
    centred = pooled.to(torch.float64) - pooled.to(torch.float64).mean(dim=0)
    total = centred.square().sum()
    return bool(moments.scatter.sum() <= COLLAPSE_RATIO * total)


@statistic
class RidgeTestMoments(Statistic):
    """The maps' moments on the test split (one shared Gram), in the training split's precision."""

    name = "ridge_test"
    version = 2
    options = RIDGE_OPTIONS
    requires = ("ridge",)

    def __init__(self, arguments, context):
        super().__init__(arguments, context)
        self.moments: RidgeMoments | None = None

    def observe(self, batch, statistics):
        if batch.split != "test":
            return
        targets = {name: batch.targets[name] for name in self.arguments}
        if self.moments is None:
            ridge = statistics["ridge"]
            self.moments = RidgeMoments(batch.pooled.shape[1], {name: target.shape[1] for name, target in targets.items()},
                                        self.context.device, ridge.precision)
            for name in self.arguments:
                ridge.maps[name].moments["test"] = self.moments.view(name)
        self.moments.update(batch.pooled, targets)


@statistic
class RidgeCorrect(Statistic):
    """Correct argmax predictions of each argument's map, per split (the probes' accuracies)."""

    name = "ridge_correct"
    options = RIDGE_OPTIONS
    requires = ("ridge",)
    keeps = "pooled"

    def predict(self, batch, statistics):
        pooled = batch.pooled.to(torch.float64)
        for name in self.arguments:
            fitted = statistics["ridge"].maps[name]
            predictions = (pooled @ fitted.weights + fitted.bias).argmax(1)
            fitted.correct[batch.split] = fitted.correct.get(batch.split, 0) + (predictions == batch.target_labels[name]).sum()
            fitted.count[batch.split] = fitted.count.get(batch.split, 0) + len(predictions)


@statistic
class Classifier(Statistic):
    """The network's cross-entropy (summed) and correct predictions per split, on the logits layer."""

    name = "classifier"
    options = ()  # the logits are the same at either feature point
    layers = ("logits",)

    def __init__(self, arguments, context):
        super().__init__(arguments, context)
        self.sums: dict[str, Tensor] = {}

    def observe(self, batch, statistics):
        logits = batch.features
        sums = self.sums.setdefault(batch.split, torch.zeros(2, dtype=torch.float64, device=logits.device))
        sums[0] += functional.cross_entropy(logits.float(), batch.labels, reduction="sum").to(torch.float64)
        sums[1] += (logits.argmax(1) == batch.labels).sum().to(torch.float64)


@statistic
class BatchStatisticsClassifier(Statistic):
    """The network's correct test predictions and examples predicted with its BatchNorm layers normalising
    with each batch's own mean and variance (Batch.batch_statistics_logits: metrics/engine.py runs a copy of the
    model so), on the logits layer. Batches of `analysis_batch_size` examples, in the test split's order: their
    statistics, hence the predictions, depend on both."""

    name = "batch_statistics"
    options = ("analysis_batch_size",)  # the batch is the statistics' sample; no features_at: the logits are the same
    layers = ("logits",)

    def __init__(self, arguments, context):
        super().__init__(arguments, context)
        self.correct: dict[str, Tensor] = {}
        self.count: dict[str, int] = {}

    def observe(self, batch, statistics):
        if batch.split != "test" or batch.batch_statistics_logits is None:
            return
        correct = (batch.batch_statistics_logits.argmax(1) == batch.labels).sum()
        self.correct["test"] = self.correct.get("test", 0) + correct
        self.count["test"] = self.count.get("test", 0) + len(batch.labels)
