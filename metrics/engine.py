"""One forward pass per checkpoint and split -> the statistics the selected metrics need -> their values.

    rows = measure(model, train, test, num_classes, Analysis(metrics="ncc_accuracy,cdnv"), seed=0)

Each metric declares the statistics it needs (metrics/registry.py); the engine gathers the union
(metrics/statistics.py) for every layer at once: the training split's pass, the fits (class centres,
ridge maps in closed form), the training split's predictions from the features kept in memory (full
ones within `feature_cache_gb`, else one more pass), then the test split's pass. A transfer task on
another dataset's images gets passes of its own. No host synchronisation inside the passes: the
held-out part is a pair of index tensors per batch, prepared once; counts stay on the device until
the end. On CUDA, TF32 is off while measuring: the products feed float64 sums and ill-conditioned
solves, and TF32's 10-bit mantissa would cost more accuracy than float32's rounding. The model is
measured in eval mode; only `classifier_accuracy_batch_statistics` reads a copy of it whose BatchNorm
layers normalise with each test batch's own statistics (`with_batch_statistics`).
"""

from __future__ import annotations

import contextlib
from copy import deepcopy
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

import data
from conf.analysis import Analysis, check_heldout_split
from metrics.moments import one_hot
from metrics.registry import METRICS, SPLITS, LayerResults, select
from metrics.ridge import Target
from metrics.similarity import PROBE_STATISTICS, probe_subset
from metrics.statistics import STATISTICS, Batch, Context, RidgeMaps, Statistic, closure
from metrics.transfer import TransferProbe
from utils import seeded_generator

# The decoder from the input to itself is the identity: it measures nothing, so it is not fitted.
SKIPPED_TARGETS = {"input": ("image",)}


@dataclass
class SplitData:
    """What one split is measured on: normalised images, labels, and a transfer task's labels (metrics/transfer.py
    `bind` sets them; None: no transfer probe reads this split)."""

    images: Tensor  # uint8 [N, C, H, W], normalised batch by batch; float ones are taken as normalised (metrics.measure)
    labels: Tensor  # int64 [N]: for the training split, the labels the run trained on
    mean: Tensor
    std: Tensor
    transfer_labels: Tensor | None = None  # int64 [N]

    def batches(self, batch_size: int):
        for start in range(0, len(self.labels), batch_size):
            stop = start + batch_size
            transfer = None if self.transfer_labels is None else self.transfer_labels[start:stop]
            images = self.images[start:stop]
            if not images.is_floating_point():
                images = data.normalize(images, self.mean, self.std)
            yield start, stop, images, self.labels[start:stop], transfer


def applicable(names, transfer: TransferProbe | None, options: Analysis | None = None) -> tuple[str, ...]:
    """The metrics among `names` that can be measured: a transfer metric only with a transfer task, a
    similarity metric only with a probe subset (`options`' probe_subset_size > 0; None: not checked)."""
    names = names if options is None else without_snapshots(names, options)
    return tuple(name for name in names
                 if transfer is not None or not any(need.endswith(":transfer") for need in METRICS[name].needs))


def without_snapshots(names, options: Analysis) -> tuple[str, ...]:
    """`names` less the metrics read from the probe subset (its snapshot, its full Grams) when there is none
    (probe_subset_size=0): they would have no rows, so they would count as missing and be measured again at every call."""
    return tuple(name for name in names if options.probe_subset_size
                 or not any(need.startswith(PROBE_STATISTICS) for need in METRICS[name].needs))


def measure(model: torch.nn.Module, train: SplitData, test: SplitData, num_classes: int, options: Analysis,
            seed: int, transfer: TransferProbe | None = None, metrics=None) -> list[dict]:
    """Rows {layer, metric, split, value, [l2], [dimensions]} of the metrics named in `metrics` (default:
    the `metrics=` option), every layer and split; the transfer probe's only with a `transfer` task."""
    return measure_layers(model, train, test, num_classes, options, seed, transfer, metrics)[0]


@torch.no_grad()
def measure_layers(model: torch.nn.Module, train: SplitData, test: SplitData, num_classes: int, options: Analysis,
                   seed: int, transfer: TransferProbe | None = None, metrics=None) -> tuple[list[dict], dict]:
    """`measure`'s rows, and the gathered {layer: LayerResults} they came from (the probe snapshot's features)."""
    names = applicable(select(options.metrics) if metrics is None else metrics, transfer, options)
    chosen = [METRICS[name] for name in names]
    layers = collect(model, train, test, num_classes, options, seed, transfer,
                     [need for metric in chosen for need in metric.needs])
    rows = []
    for metric in chosen:
        if metric.across_layers:
            rows += metric.function(layers, list(layers), options)  # depth order: the features' order
            continue
        for name, layer in layers.items():
            values = metric.function(layer)
            details = metric.details(layer) if metric.details and values else {}
            examples = metric.examples(layer) if metric.examples and values else {}
            rows += [{"layer": name, "metric": metric.name, "split": split, "value": float(value), **details,
                      **({"examples": int(examples[split])} if split in examples else {})}
                     for split, value in values.items()]
    return rows, layers


def collect(model, train: SplitData, test: SplitData, num_classes: int, options: Analysis, seed: int,
            transfer: TransferProbe | None = None, needs=None) -> dict[str, LayerResults]:
    """{layer: LayerResults} with the statistics `needs` names (default: every metric's). `transfer`: the
    transfer probe (LearnPhase); on the run's own images (its splits are `train` and `test` labelled by
    the task) it is fitted in the same passes, on another dataset's in passes of their own."""
    if needs is None:
        needs = [need for name in applicable(METRICS, transfer, options) for need in METRICS[name].needs]
    model.eval()
    foreign = transfer is not None and not transfer.own
    own_needs = [need for need in needs if not (foreign and need.endswith(":transfer"))]
    if transfer is not None and transfer.own:
        train, test = transfer.train, transfer.test  # the same examples, carrying the task's labels
    transfer_classes = 0 if transfer is None else transfer.num_classes
    device = train.images.device
    with tf32_off(device):
        context = Context(num_classes, transfer_classes, options, seed, device,
                          probe_subset(len(test.labels), options.probe_subset_size) if options.probe_subset_size else None,
                          getattr(final_linear(model), "weight", None))
        gathered = gather(model, train, test, closure(own_needs), context, "heldout")
        if foreign and len(own_needs) < len(needs):
            foreign_context = Context(transfer.num_classes, transfer_classes, options, seed, device)
            # the other dataset's examples are labelled by the task alone: its labels are what the maps fit
            foreign_train, foreign_test = (_labelled_by_task(split) for split in (transfer.train, transfer.test))
            others = gather(model, foreign_train, foreign_test, closure(set(needs) - set(own_needs)),
                            foreign_context, "transfer heldout")
        else:
            others = {}
    counts = {"train": len(train.labels), "test": len(test.labels)}
    return {name: results(name, statistics, others.get(name, {}), counts) for name, statistics in gathered.items()}


def final_linear(model) -> torch.nn.Linear | None:
    """The head's last Linear: the classifier whose weights W NC3 compares with the class means of its input
    (None for a model without one)."""
    head = getattr(model, "head", None)
    linears = [module for module in head.modules() if isinstance(module, torch.nn.Linear)] \
        if isinstance(head, torch.nn.Module) else []
    return linears[-1] if linears else None


def _labelled_by_task(split: SplitData) -> SplitData:
    return SplitData(split.images, split.transfer_labels, split.mean, split.std, split.transfer_labels)


@contextlib.contextmanager
def tf32_off(device: torch.device):
    """TF32 off for matmuls and convolutions while measuring on CUDA (restored afterwards)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def gather(model, train: SplitData, test: SplitData, statistics_needed: dict[str, frozenset[str]], context: Context,
           heldout_name: str) -> dict[str, dict[str, Statistic]]:
    """{layer: {statistic name: Statistic}} after the training split's pass, the fits, the training split's
    predictions and the test split's pass."""
    options = context.options
    # every selection reads the batches in the same order, so a metric's value does not depend on the others chosen
    parts = heldout_parts(len(train.labels), options, context.seed, heldout_name, context.device)
    layers: dict[str, dict[str, Statistic]] = {}
    kept = Kept(options.feature_cache_gb * 2 ** 30)
    head = final_linear(model) if "classifier_input" in statistics_needed else None
    for prepared in prepared_batches(train, statistics_needed, context, parts):
        for name, tensor in prepared.forward(model, options.features_at, head).items():
            statistics = layers.get(name)
            if statistics is None:
                statistics = layers[name] = layer_statistics(name, statistics_needed, context)
            batch = prepared.batch("train", tensor, options.probe_dimensions)
            for statistic in statistics.values():
                statistic.observe(batch, statistics)
            kept.add(name, batch, statistics)
    for statistics in layers.values():
        for statistic in statistics.values():
            statistic.fit(statistics)
    refit_in_float64(model, train, parts, layers, statistics_needed, context)
    kept.replay(model, train, parts, layers, statistics_needed, context)
    twin = with_batch_statistics(model) if "batch_statistics" in statistics_needed else None
    for prepared in prepared_batches(test, statistics_needed, context):
        features = prepared.forward(model, options.features_at, head)
        if "batch_statistics" in statistics_needed:
            prepared.batch_statistics_logits = batch_statistics_logits(twin, prepared.images, features["logits"])
        for name, tensor in features.items():
            statistics = layers[name]
            batch = prepared.batch("test", tensor, options.probe_dimensions)
            for statistic in statistics.values():
                statistic.observe(batch, statistics)
                statistic.predict(batch, statistics)
    return layers


@dataclass
class Prepared:
    """One batch of a split before the forward pass: images, labels and targets shared by every layer
    (a Target's sums are computed once, however many layers read it)."""

    images: Tensor
    labels: Tensor
    targets: dict[str, Target]
    target_labels: dict[str, Tensor]
    parts: tuple[slice, slice] | None  # the training split: its fitting rows, then its held-out rows
    part_targets: tuple[dict[str, Target], ...] | None
    network_predictions: Tensor | None = None  # set by `forward`
    classifier_inputs: Tensor | None = None  # set by `forward` when given the head's final Linear
    batch_statistics_logits: Tensor | None = None  # set by `gather` on the test split when gathered

    def batch(self, split: str, features: Tensor, probe_dimensions: int) -> Batch:
        return Batch(split, features, self.labels, self.targets, self.target_labels, probe_dimensions,
                     self.parts, self.part_targets, self.network_predictions, self.classifier_inputs,
                     self.batch_statistics_logits)

    def forward(self, model, point: str, head: torch.nn.Linear | None = None) -> dict[str, Tensor]:
        """Every layer's features of this batch; remembers the network's own predictions (its logits' argmax)
        and, with `head`, what that Linear reads (a hook that exists only during this call)."""
        captured = []
        handle = None if head is None else head.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        try:
            features = model.features(self.images, point=point)
        finally:
            if handle is not None:
                handle.remove()
        self.network_predictions = features["logits"].argmax(dim=1) if "logits" in features else None
        self.classifier_inputs = captured[-1].flatten(1) if captured else None
        return features


def with_batch_statistics(model: torch.nn.Module) -> torch.nn.Module | None:
    """A copy of `model` in eval mode (dropout off) but for its BatchNorm layers, which normalise with each
    batch's own mean and variance and neither read nor update running statistics; None for a model without
    BatchNorm (its two modes are one network). A copy: the model every other metric reads is never switched."""
    if not any(isinstance(module, _BatchNorm) for module in model.modules()):
        return None
    twin = deepcopy(model).eval()
    for module in twin.modules():
        if isinstance(module, _BatchNorm):
            module.train()
            module.track_running_stats = False  # train-mode BN without running buffers: batch statistics, no update
    return twin


def batch_statistics_logits(twin: torch.nn.Module | None, images: Tensor, eval_logits: Tensor) -> Tensor | None:
    """One test batch's logits with BatchNorm on the batch's own statistics: `twin`'s (with_batch_statistics), the
    eval-mode `eval_logits` for a model without BatchNorm, None for a batch of one example (it has no batch
    statistics: BatchNorm1d refuses it, BatchNorm2d would normalise each image by itself)."""
    if twin is None:
        return eval_logits
    if len(images) < 2:
        return None
    return twin(images)


def prepared_batches(split: SplitData, statistics_needed, context: Context, parts=None):
    """The split's batches; with `parts` (the training split) each batch is reordered so its fitting
    rows come first: every layer then reads both parts as views, with no copy and no host sync."""
    shifts: dict[str, Tensor] = {}  # each target's first batch mean, shared by every layer's moments
    for index, (_, _, images, labels, transfer_labels) in enumerate(split.batches(context.options.analysis_batch_size)):
        slices = None
        if parts is not None:
            order, fitting = parts[index]
            images, labels = images.index_select(0, order), labels.index_select(0, order)
            transfer_labels = None if transfer_labels is None else transfer_labels.index_select(0, order)
            slices = (slice(0, fitting), slice(fitting, len(order)))
        values, target_labels = batch_targets(images, labels, transfer_labels, statistics_needed, context)
        for name, tensor in values.items():
            shifts.setdefault(name, tensor.mean(dim=0).to(torch.float64))  # float32-exact: sums are exact about it
        targets = {name: Target(tensor, shifts[name]) for name, tensor in values.items()}
        part_targets = None if slices is None else tuple(
            {name: Target(tensor[rows], shifts[name]) for name, tensor in values.items()} for rows in slices)
        yield Prepared(images, labels, targets, target_labels, slices, part_targets)


def refit_in_float64(model, train: SplitData, parts, layers, statistics_needed, context: Context) -> None:
    """Layers whose ridge maps fit almost exactly from float32 products (metrics/statistics.py:
    RESIDUAL_RATIO) gather their ridge moments again from float64 products, in one more pass."""
    redo = [name for name, statistics in layers.items() if getattr(statistics.get("ridge"), "needs_float64", False)]
    if not redo:
        return
    options = context.options
    fresh = {name: RidgeMaps(layers[name]["ridge"].arguments, context, precision=torch.float64) for name in redo}
    for prepared in prepared_batches(train, statistics_needed, context, parts):
        features = prepared.forward(model, options.features_at)
        for name in redo:
            fresh[name].observe(prepared.batch("train", features[name], options.probe_dimensions), layers[name])
    for name in redo:
        fresh[name].fit(layers[name])
        layers[name]["ridge"] = fresh[name]


def heldout_parts(examples: int, options: Analysis, seed: int, name: str, device) -> list[tuple[Tensor, int]]:
    """Per batch of the training split: (an order of its rows on the device, fitting rows first, then the
    held-out ones; how many are fitting). Drawn once on the CPU, per example (so the draw does not
    depend on the batch size)."""
    heldout = torch.rand(examples, generator=seeded_generator(seed, name)) < options.heldout_fraction
    check_heldout_split(options.heldout_fraction, int(heldout.sum()), examples)
    parts = []
    for part in heldout.split(options.analysis_batch_size):
        order = torch.cat([torch.nonzero(~part).flatten(), torch.nonzero(part).flatten()])
        parts.append((order.to(device), int((~part).sum())))
    return parts


def layer_statistics(name: str, statistics_needed: dict[str, frozenset[str]], context: Context) -> dict[str, Statistic]:
    """One layer's statistics: every needed statistic that applies to it, with the targets it measures something
    for. A statistic whose targets are all skipped on this layer is dropped, unless a statistic built here
    requires it: then it is built with no argument (a Gram-only ridge for the feature spectrum on the `input`
    layer)."""
    skipped = set(SKIPPED_TARGETS.get(name, ()))
    built, required = set(), set()
    # closure's order: a statistic comes after the statistics it requires
    for statistic_name in reversed(list(statistics_needed)):
        cls, arguments = STATISTICS[statistic_name], statistics_needed[statistic_name]
        if (cls.layers is None or name in cls.layers) and (not arguments or arguments - skipped
                                                            or statistic_name in required):
            built.add(statistic_name)
            required.update(cls.requires)
    return {statistic_name: STATISTICS[statistic_name](arguments - skipped, context)
            for statistic_name, arguments in statistics_needed.items() if statistic_name in built}


def batch_targets(images: Tensor, labels: Tensor, transfer_labels: Tensor | None, statistics_needed, context: Context):
    """({target: float [B, K]}, {target: int64 [B]}) for the targets some statistic reads."""
    wanted = set().union(*statistics_needed.values()) if statistics_needed else set()
    targets, target_labels = {}, {"classes": labels}
    if "classes" in wanted:
        targets["classes"] = one_hot(labels, context.num_classes)
    if "image" in wanted:
        targets["image"] = images.flatten(1)
    if "transfer" in wanted and transfer_labels is not None:
        targets["transfer"] = one_hot(transfer_labels, context.transfer_classes)
        target_labels["transfer"] = transfer_labels
    return targets, target_labels


class Kept:
    """The training split's batches as the predicting statistics read them again after the fits: pooled
    features always (small), full ones within the cache budget; a layer whose full features do not fit
    is read again in one more pass (the one exception to "one pass per split")."""

    def __init__(self, budget_bytes: float):
        self.budget = budget_bytes
        self.batches: dict[str, list[Batch]] = {}
        self.overflow: set[str] = set()  # layers whose full features did not fit

    def add(self, name: str, batch: Batch, statistics: dict[str, Statistic]) -> None:
        keeps = {statistic.keeps for statistic in statistics.values()} - {None}
        if not keeps:
            return
        kept = Batch("train", batch.features, batch.labels, batch.targets, batch.target_labels, batch.probe_dimensions,
                     network_predictions=batch.network_predictions)
        kept.targets = {}  # predictions read labels only: the target values need not stay in memory
        if "pooled" in keeps:
            kept.__dict__["pooled"] = batch.pooled
        if "flat" in keeps and name not in self.overflow:
            size = batch.flat.numel() * batch.flat.element_size()
            if size <= self.budget:
                kept.__dict__["flat"] = batch.flat
                self.budget -= size
            else:
                self.overflow.add(name)
                for earlier in self.batches.get(name, []):
                    earlier.__dict__.pop("flat", None)
        kept.features = None  # only what was kept above stays in memory
        self.batches.setdefault(name, []).append(kept)

    def replay(self, model, train: SplitData, parts, layers, statistics_needed, context: Context) -> None:
        for name, batches in self.batches.items():
            if name in self.overflow:
                continue
            for batch in batches:
                for statistic in layers[name].values():
                    statistic.predict(batch, layers[name])
        if self.overflow:
            self._second_pass(model, train, parts, layers, statistics_needed, context)
        self.batches.clear()

    def _second_pass(self, model, train: SplitData, parts, layers, statistics_needed, context: Context) -> None:
        options = context.options
        for index, prepared in enumerate(prepared_batches(train, statistics_needed, context, parts)):
            features = prepared.forward(model, options.features_at)
            for name in self.overflow:
                batch = prepared.batch("train", features[name], options.probe_dimensions)
                batch.__dict__["pooled"] = self.batches[name][index].__dict__.get("pooled", batch.pooled)
                for statistic in layers[name].values():
                    statistic.predict(batch, layers[name])


def results(name: str, statistics: dict[str, Statistic], foreign: dict[str, Statistic],
            counts: dict[str, int]) -> LayerResults:
    """A layer's LayerResults from its gathered statistics (one host synchronisation per layer)."""
    layer = LayerResults(name, SPLITS, counts, statistics={**statistics})
    if "class_moments" in statistics:
        layer.classes = statistics["class_moments"].moments
    if "ncc" in statistics:
        layer.ncc_correct = {split: float(value) for split, value in statistics["ncc"].correct.items()}
    for source in (statistics, foreign):
        if "ridge" in source:
            layer.maps.update(source["ridge"].maps)
    if "classifier" in statistics:
        layer.classifier = {split: (sums[0].item() / counts[split], sums[1].item() / counts[split])
                            for split, sums in statistics["classifier"].sums.items()}
    return layer
