"""One forward pass per checkpoint and split -> every layer's sufficient statistics -> metric values.

The training split is read first: it gives the class centres (NCC), the ridge probes and the linear
decoder, all in closed form from streamed float64 moments. The test split is then measured against
them in its own single pass. The training split's own NCC and probe accuracies need the centres
and weights that only exist after its pass: its features are kept (pooled ones always, full ones
within `feature_cache_gb`) and classified afterwards; a layer too wide to keep is read again in a
second pass, the one exception to "one pass per split".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as functional
from torch import Tensor

import data
from conf.analysis import Analysis, check_heldout_split
from metrics.moments import ClassMoments, ncc_predictions
from metrics.pooling import pool_to
from metrics.registry import METRICS, LayerResults, LinearMap
from metrics.ridge import CrossMoments, choose_l2, ridge_fit
from metrics.trained import train_linear_map
from metrics.transfer import TransferProbe
from utils import seeded_generator

SPLITS = ("train", "test")


@dataclass
class SplitData:
    """What one split is measured on: normalised images, labels, and a transfer task's labels (metrics/transfer.py
    `bind` sets them; None: no transfer probe reads this split)."""

    images: Tensor  # uint8 [N, C, H, W]
    labels: Tensor  # int64 [N]: for the training split, the labels the run trained on
    mean: Tensor
    std: Tensor
    transfer_labels: Tensor | None = None  # int64 [N]

    def batches(self, batch_size: int):
        for start in range(0, len(self.labels), batch_size):
            stop = start + batch_size
            transfer = None if self.transfer_labels is None else self.transfer_labels[start:stop]
            yield (start, stop, data.normalize(self.images[start:stop], self.mean, self.std),
                   self.labels[start:stop], transfer)


@dataclass
class LayerState:
    """Every accumulator of one layer on the training split."""

    classes: ClassMoments
    probe: tuple[CrossMoments, CrossMoments]  # (fit part, held-out part): features -> one-hot class
    decoder: tuple[CrossMoments, CrossMoments]  # features -> the normalised input image (LearnPhase)
    transfer: tuple[CrossMoments, CrossMoments] | None  # features -> one-hot transfer task (LearnPhase); None: no probe
    pooled_dimensions: int
    cached_full: list[Tensor] = field(default_factory=list)
    cached_pooled: list[Tensor] = field(default_factory=list)


def _one_hot(labels: Tensor, classes: int) -> Tensor:
    return functional.one_hot(labels, classes).to(torch.float64)


@torch.no_grad()
def measure(model: torch.nn.Module, train: SplitData, test: SplitData, num_classes: int, options: Analysis,
            seed: int, transfer: TransferProbe | None = None) -> list[dict]:
    """Rows {layer, metric, split, value, [l2], [dimensions]}: every registered metric (metrics/registry.py)
    of every layer on both splits, plus the classifier's loss and accuracy; the transfer probe's only
    with a `transfer` probe (metrics/transfer.py)."""
    layers, classifier = collect(model, train, test, num_classes, options, seed, transfer)
    rows = []
    for name, layer in layers.items():
        for metric in METRICS.values():
            details = metric.details(layer) if metric.details else {}
            rows += [_row(name, metric.name, split, value, **details) for split, value in metric.function(layer).items()]
    for split, (loss, accuracy) in classifier.items():
        rows += [_row("logits", "classifier_loss", split, loss), _row("logits", "classifier_accuracy", split, accuracy)]
    return rows


def collect(model, train: SplitData, test: SplitData, num_classes: int, options: Analysis, seed: int,
            transfer: TransferProbe | None = None):
    """One pass over each split -> ({layer: LayerResults}, {split: (classifier loss, accuracy)}).
    `transfer`: the transfer probe (LearnPhase); on the run's own images (its splits are `train` and
    `test` labelled by the task) it is fitted in the same passes, on another dataset's in passes of
    their own. None: no transfer probe."""
    model.eval()
    device = train.images.device
    classifier = {split: torch.zeros(2, dtype=torch.float64, device=device) for split in SPLITS}
    if transfer is not None and transfer.own:
        train, test = transfer.train, transfer.test  # the same examples, carrying the task's labels
    states = _train_pass(model, train, num_classes, options, seed, classifier["train"], transfer)
    transfer_pooled = None if transfer is None or transfer.own else _transfer_fit(model, transfer, states, options, seed)
    results = {name: _fit_layer(model, name, state, train, test, transfer, transfer_pooled, num_classes, options, seed)
               for name, state in states.items()}
    _test_pass(model, test, transfer, results, num_classes, options, classifier["test"])
    counts = {"train": len(train.labels), "test": len(test.labels)}
    return results, {split: (sums[0].item() / counts[split], sums[1].item() / counts[split])
                     for split, sums in classifier.items()}


def _train_pass(model, train: SplitData, num_classes: int, options: Analysis, seed: int, classifier: Tensor,
                transfer: TransferProbe | None) -> dict[str, "LayerState"]:
    """The training split's pass: every layer's class moments and the probes' streamed moments (fit
    and held-out parts), with the features kept for the train accuracies while the cache allows."""
    device = train.images.device
    heldout = torch.rand(len(train.labels), generator=seeded_generator(seed, "heldout")) < options.heldout_fraction
    check_heldout_split(options.heldout_fraction, int(heldout.sum()), len(heldout))  # on the CPU: no device sync
    heldout = heldout.to(device)
    states: dict[str, LayerState] = {}
    cache_budget = options.feature_cache_gb * 2 ** 30
    for start, stop, images, labels, transfer_labels in train.batches(options.analysis_batch_size):
        features = model.features(images, point=options.features_at)
        _classifier_update(classifier, features["logits"], labels)
        held = heldout[start:stop]
        target_image = images.flatten(1)
        for name, tensor in features.items():
            flat = tensor.flatten(1)
            pooled = pool_to(tensor, options.probe_dimensions)
            if name not in states:
                states[name] = _new_state(flat.shape[1], pooled.shape[1], target_image.shape[1], num_classes,
                                          0 if transfer is None else transfer.num_classes, device)
            state = states[name]
            state.classes.update(flat, labels)
            pairs = [(state.probe, _one_hot(labels, num_classes)), (state.decoder, target_image)]
            if transfer is not None and transfer.own:
                pairs.append((state.transfer, _one_hot(transfer_labels, transfer.num_classes)))
            for (fit, held_out), targets in pairs:
                fit.update(pooled[~held], targets[~held])
                held_out.update(pooled[held], targets[held])
            state.cached_pooled.append(pooled)
            if cache_budget >= flat.numel() * flat.element_size():
                state.cached_full.append(flat)
                cache_budget -= flat.numel() * flat.element_size()
    return states


def _fit_layer(model, name: str, state: "LayerState", train: SplitData, test: SplitData, transfer: TransferProbe | None,
               transfer_pooled, num_classes: int, options: Analysis, seed: int) -> "LayerResults":
    """One layer's linear maps (closed form: l2 chosen on the held-out part, then refit on the whole
    split) and its training-split accuracies; frees the kept features."""
    pooled = torch.cat(state.cached_pooled)
    maps = {}
    pairs = [("probe", state.probe), ("reconstruction", state.decoder)] + (
        [("transfer", state.transfer)] if transfer is not None else [])
    for key, (fit, held_out) in pairs:
        whole = fit.merge(held_out)
        if options.linear_maps == "closed_form":
            l2 = choose_l2(fit, held_out)  # on the held-out part, then refit on the whole split
            maps[key] = LinearMap(*ridge_fit(whole, l2), l2, {"train": whole})
        else:  # LearnPhase's way, for parity: gradient descent on the kept features (no l2 to choose)
            inputs, targets = _training_pairs(key, pooled, train, transfer, transfer_pooled, name, num_classes)
            with torch.enable_grad():  # measure() runs under no_grad; this map learns by gradients
                weights, bias = train_linear_map(inputs, targets, optimizer=options.linear_maps, seed=seed)
            maps[key] = LinearMap(weights, bias, float("nan"), {"train": whole})
    full = torch.cat(state.cached_full) if len(state.cached_full) == len(state.cached_pooled) else None
    correct = {"ncc": _ncc_correct(model, name, full, train, state.classes, options.analysis_batch_size,
                                      options.features_at),
               "probe": (_predict(pooled, maps["probe"]) == train.labels).sum().item()}
    if transfer is not None:
        pooled_for_transfer = pooled if transfer_pooled is None else transfer_pooled[name]
        correct["transfer"] = (_predict(pooled_for_transfer, maps["transfer"]) == transfer.train.transfer_labels).sum().item()
    state.cached_full.clear()
    state.cached_pooled.clear()
    return LayerResults(SPLITS, {"train": len(train.labels), "test": len(test.labels)}, {"train": state.classes},
                        {"train": correct}, maps, state.pooled_dimensions,
                        {} if transfer is None else {"train": len(transfer.train.labels), "test": len(transfer.test.labels)})


def _test_pass(model, test: SplitData, transfer: TransferProbe | None, results: dict[str, "LayerResults"],
               num_classes: int, options: Analysis, classifier: Tensor) -> None:
    """The test split's pass (NCC against the *training* centres, the maps fitted on the training
    split, the decoder's test moments), then another dataset's test split for the transfer probe."""
    device = test.images.device
    own = transfer is not None and transfer.own
    test_correct = {name: torch.zeros(3, dtype=torch.float64, device=device) for name in results}
    for _, _, images, labels, transfer_labels in test.batches(options.analysis_batch_size):
        features = model.features(images, point=options.features_at)
        _classifier_update(classifier, features["logits"], labels)
        for name, tensor in features.items():
            flat, pooled, layer = tensor.flatten(1), pool_to(tensor, options.probe_dimensions), results[name]
            train_classes = layer.classes["train"]
            layer.classes.setdefault("test", ClassMoments(num_classes, flat.shape[1], device)).update(flat, labels)
            decoder = layer.maps["reconstruction"].moments
            decoder.setdefault("test", CrossMoments(pooled.shape[1], images[0].numel(), device)).update(
                pooled, images.flatten(1))
            test_correct[name] += torch.stack([
                (ncc_predictions(flat, train_classes.mean, train_classes.count > 0) == labels).sum(),
                (_predict(pooled, layer.maps["probe"]) == labels).sum(),
                (_predict(pooled, layer.maps["transfer"]) == transfer_labels).sum() if own
                else torch.zeros((), device=device)]).to(torch.float64)
    if transfer is not None and not own:
        for _, _, images, _, transfer_labels in transfer.test.batches(options.analysis_batch_size):
            for name, tensor in model.features(images, point=options.features_at).items():
                predictions = _predict(pool_to(tensor, options.probe_dimensions), results[name].maps["transfer"])
                test_correct[name][2] += (predictions == transfer_labels).sum()
    for name, layer in results.items():
        layer.correct["test"] = dict(zip(("ncc", "probe", "transfer"), test_correct[name].tolist()))


def _training_pairs(key, pooled, train: SplitData, transfer: TransferProbe, transfer_pooled, name, num_classes):
    """(features, targets) of the whole training split for one map, for the trained (non closed-form) maps."""
    if key == "probe":
        return pooled, _one_hot(train.labels, num_classes)
    if key == "reconstruction":
        return pooled, torch.cat([images.flatten(1) for _, _, images, _, _ in train.batches(4096)]).to(torch.float64)
    features = pooled if transfer_pooled is None else transfer_pooled[name]
    return features, _one_hot(transfer.train.transfer_labels, transfer.num_classes)


def _transfer_fit(model, transfer: TransferProbe, states: dict[str, LayerState], options: Analysis,
                  seed: int) -> dict[str, Tensor]:
    """Another dataset's training split, in a pass of its own: the transfer probe's moments (fit and
    held-out parts) per layer; returns its pooled features per layer, for its train accuracy."""
    transfer_train = transfer.train
    heldout = torch.rand(len(transfer_train.labels), generator=seeded_generator(seed, "transfer heldout"))
    heldout = heldout < options.heldout_fraction
    check_heldout_split(options.heldout_fraction, int(heldout.sum()), len(heldout))  # on the CPU: no device sync
    heldout = heldout.to(transfer_train.images.device)
    pooled_by_layer: dict[str, list[Tensor]] = {}
    for start, stop, images, _, transfer_labels in transfer_train.batches(options.analysis_batch_size):
        held, targets = heldout[start:stop], _one_hot(transfer_labels, transfer.num_classes)
        for name, tensor in model.features(images, point=options.features_at).items():
            pooled = pool_to(tensor, options.probe_dimensions)
            fit, held_out = states[name].transfer
            fit.update(pooled[~held], targets[~held])
            held_out.update(pooled[held], targets[held])
            pooled_by_layer.setdefault(name, []).append(pooled)
    return {name: torch.cat(parts) for name, parts in pooled_by_layer.items()}


def _new_state(width: int, pooled_width: int, pixels: int, num_classes: int, transfer_classes: int,
               device) -> LayerState:
    """A layer's empty accumulators; the transfer probe's only when it has a task (transfer_classes > 0)."""
    def pair(targets: int):
        return CrossMoments(pooled_width, targets, device), CrossMoments(pooled_width, targets, device)

    return LayerState(ClassMoments(num_classes, width, device), pair(num_classes), pair(pixels),
                      pair(transfer_classes) if transfer_classes else None, pooled_width)


def _classifier_update(sums: Tensor, logits: Tensor, labels: Tensor) -> None:
    """Cross-entropy summed and correct predictions counted, on the device (no host sync)."""
    sums[0] += functional.cross_entropy(logits.float(), labels, reduction="sum").to(torch.float64)
    sums[1] += (logits.argmax(1) == labels).sum().to(torch.float64)


def _predict(pooled: Tensor, fitted: LinearMap) -> Tensor:
    return (pooled.to(torch.float64) @ fitted.weights + fitted.bias).argmax(1)


def _ncc_correct(model, name, full, split_data: SplitData, classes: ClassMoments, batch_size, point: str) -> float:
    """Correct NCC predictions on the training split against its own centres: from the kept features,
    or from a second pass when the layer was too wide to keep."""
    centres, present = classes.mean, classes.count > 0
    correct = torch.zeros((), dtype=torch.float64, device=centres.device)
    if full is not None:
        for start in range(0, len(full), batch_size):
            predictions = ncc_predictions(full[start:start + batch_size], centres, present)
            correct += (predictions == split_data.labels[start:start + batch_size]).sum()
        return correct.item()
    for _, _, images, labels, _ in split_data.batches(batch_size):
        flat = model.features(images, point=point)[name].flatten(1)
        correct += (ncc_predictions(flat, centres, present) == labels).sum()
    return correct.item()


def _row(layer: str, metric: str, split: str, value: float, **details) -> dict:
    return {"layer": layer, "metric": metric, "split": split, "value": float(value), **details}


def effective_depth_rows(rows: list[dict], layer_names: list[str], epsilon: float) -> list[dict]:
    """IntermediateNC's effective depth: the first layer whose NCC train accuracy is within epsilon of
    the last layer's (as a layer index into `layer_names`)."""
    from metrics.depth import effective_depth

    accuracy = {row["layer"]: row["value"] for row in rows if row["metric"] == "ncc_accuracy" and row["split"] == "train"}
    values = [accuracy[name] for name in layer_names if name in accuracy]
    return [_row("all", "effective_depth", "train", effective_depth(values, epsilon))]
