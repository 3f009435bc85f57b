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
from conf.analysis import Analysis
from metrics.moments import ClassMoments, cdnv, ncc_predictions
from metrics.pooling import pool_to
from metrics.ridge import CrossMoments, choose_l2, ridge_fit, ridge_mse
from metrics.transfer import colour_dominance
from utils import seeded_generator

TRANSFER_CLASSES = 3  # colour dominance: R, G or B (LearnPhase)


@dataclass
class SplitData:
    """What one split is measured on: normalised images, labels, and the raw images' colour dominance."""

    images: Tensor  # uint8 [N, C, H, W]
    labels: Tensor  # int64 [N]: for the training split, the labels the run trained on
    mean: Tensor
    std: Tensor
    transfer_labels: Tensor = field(init=False)

    def __post_init__(self):
        self.transfer_labels = colour_dominance(self.images)

    def batches(self, batch_size: int):
        for start in range(0, len(self.labels), batch_size):
            stop = start + batch_size
            yield (start, stop, data.normalize(self.images[start:stop], self.mean, self.std),
                   self.labels[start:stop], self.transfer_labels[start:stop])


@dataclass
class LayerState:
    """Every accumulator of one layer on the training split."""

    classes: ClassMoments
    probe: tuple[CrossMoments, CrossMoments]  # (fit part, held-out part): features -> one-hot class
    decoder: tuple[CrossMoments, CrossMoments]  # features -> the normalised input image (LearnPhase)
    transfer: tuple[CrossMoments, CrossMoments]  # features -> one-hot colour dominance (LearnPhase)
    pooled_dimensions: int
    cached_full: list[Tensor] = field(default_factory=list)
    cached_pooled: list[Tensor] = field(default_factory=list)


def _one_hot(labels: Tensor, classes: int) -> Tensor:
    return functional.one_hot(labels, classes).to(torch.float64)


@torch.no_grad()
def measure(model: torch.nn.Module, train: SplitData, test: SplitData, num_classes: int, options: Analysis,
            seed: int) -> list[dict]:
    """Rows {layer, metric, split, value, [l2], [dimensions]} for every layer, both splits, plus the
    classifier's loss and accuracy and the effective depth."""
    model.eval()
    device = train.images.device
    heldout = torch.rand(len(train.labels), generator=seeded_generator(seed, "heldout")) < options.heldout_fraction
    heldout = heldout.to(device)
    states: dict[str, LayerState] = {}
    cache_budget = options.feature_cache_gb * 2 ** 30
    classifier = {"train": torch.zeros(2, dtype=torch.float64, device=device),
                  "test": torch.zeros(2, dtype=torch.float64, device=device)}

    for start, stop, images, labels, transfer in train.batches(options.analysis_batch_size):
        features = model.features(images)
        _classifier_update(classifier["train"], features["logits"], labels)
        held = heldout[start:stop]
        target_image = images.flatten(1)
        for name, tensor in features.items():
            flat = tensor.flatten(1)
            pooled = pool_to(tensor, options.probe_dimensions)
            if name not in states:
                states[name] = _new_state(flat.shape[1], pooled.shape[1], target_image.shape[1], num_classes, device)
            state = states[name]
            state.classes.update(flat, labels)
            for (fit, held_out), targets in ((state.probe, _one_hot(labels, num_classes)),
                                             (state.decoder, target_image),
                                             (state.transfer, _one_hot(transfer, TRANSFER_CLASSES))):
                fit.update(pooled[~held], targets[~held])
                held_out.update(pooled[held], targets[held])
            state.cached_pooled.append(pooled)
            if cache_budget >= flat.numel() * flat.element_size():
                state.cached_full.append(flat)
                cache_budget -= flat.numel() * flat.element_size()

    rows: list[dict] = []
    fitted = {}
    for name, state in states.items():
        centres, present = state.classes.mean, state.classes.count > 0
        rows.append(_row(name, "cdnv", "train", cdnv(state.classes)))
        maps = {}
        for metric, (fit, held_out) in (("probe", state.probe), ("reconstruction", state.decoder),
                                        ("transfer", state.transfer)):
            l2 = choose_l2(fit, held_out)
            weights, bias = ridge_fit(fit.merge(held_out), l2)  # refit on the whole split with the chosen l2
            maps[metric] = (weights, bias, l2)
            if metric == "reconstruction":  # LearnPhase's decoder loss: mean squared error per pixel
                rows.append(_row(name, "reconstruction_mse", "train", ridge_mse(fit.merge(held_out), weights, bias),
                                 l2=l2, dimensions=state.pooled_dimensions))
        fitted[name] = (centres, present, maps)
        pooled = torch.cat(state.cached_pooled)
        rows += _accuracies(name, "train", pooled, train, maps, state.pooled_dimensions)
        full = torch.cat(state.cached_full) if len(state.cached_full) == len(state.cached_pooled) else None
        rows.append(_row(name, "ncc_accuracy", "train", _ncc_accuracy(model, name, full, train, centres, present,
                                                                      options.analysis_batch_size)))
        state.cached_full.clear()
        state.cached_pooled.clear()

    test_classes: dict[str, ClassMoments] = {}
    test_decoder: dict[str, CrossMoments] = {}
    correct = {name: torch.zeros(3, dtype=torch.float64, device=device) for name in states}
    for _, _, images, labels, transfer in test.batches(options.analysis_batch_size):
        features = model.features(images)
        _classifier_update(classifier["test"], features["logits"], labels)
        for name, tensor in features.items():
            flat, pooled = tensor.flatten(1), pool_to(tensor, options.probe_dimensions)
            centres, present, maps = fitted[name]
            test_classes.setdefault(name, ClassMoments(num_classes, flat.shape[1], device)).update(flat, labels)
            test_decoder.setdefault(name, CrossMoments(pooled.shape[1], images[0].numel(), device)).update(
                pooled, images.flatten(1))
            correct[name] += torch.stack([
                (ncc_predictions(flat, centres, present) == labels).sum(),
                (_predict(pooled, maps["probe"]) == labels).sum(),
                (_predict(pooled, maps["transfer"]) == transfer).sum()]).to(torch.float64)
    for name, state in states.items():
        count = len(test.labels)
        ncc, probe, transfer = (correct[name] / count).tolist()
        weights, bias, l2 = fitted[name][2]["reconstruction"]
        rows += [_row(name, "ncc_accuracy", "test", ncc), _row(name, "cdnv", "test", cdnv(test_classes[name])),
                 _row(name, "probe_accuracy", "test", probe, l2=fitted[name][2]["probe"][2],
                      dimensions=state.pooled_dimensions),
                 _row(name, "transfer_accuracy", "test", transfer, l2=fitted[name][2]["transfer"][2],
                      dimensions=state.pooled_dimensions),
                 _row(name, "reconstruction_mse", "test", ridge_mse(test_decoder[name], weights, bias), l2=l2,
                      dimensions=state.pooled_dimensions)]
    for split, sums in classifier.items():
        loss, correct_count = sums.tolist()
        count = len((train if split == "train" else test).labels)
        rows += [_row("logits", "classifier_loss", split, loss / count),
                 _row("logits", "classifier_accuracy", split, correct_count / count)]
    return rows


def _new_state(width: int, pooled_width: int, pixels: int, num_classes: int, device) -> LayerState:
    def pair(targets: int):
        return CrossMoments(pooled_width, targets, device), CrossMoments(pooled_width, targets, device)

    return LayerState(ClassMoments(num_classes, width, device), pair(num_classes), pair(pixels),
                      pair(TRANSFER_CLASSES), pooled_width)


def _classifier_update(sums: Tensor, logits: Tensor, labels: Tensor) -> None:
    """Cross-entropy summed and correct predictions counted, on the device (no host sync)."""
    sums[0] += functional.cross_entropy(logits.float(), labels, reduction="sum").to(torch.float64)
    sums[1] += (logits.argmax(1) == labels).sum().to(torch.float64)


def _predict(pooled: Tensor, fitted: tuple[Tensor, Tensor, float]) -> Tensor:
    weights, bias, _ = fitted
    return (pooled.to(torch.float64) @ weights + bias).argmax(1)


def _accuracies(name, split, pooled, split_data: SplitData, maps, dimensions) -> list[dict]:
    probe = (_predict(pooled, maps["probe"]) == split_data.labels).double().mean().item()
    transfer = (_predict(pooled, maps["transfer"]) == split_data.transfer_labels).double().mean().item()
    return [_row(name, "probe_accuracy", split, probe, l2=maps["probe"][2], dimensions=dimensions),
            _row(name, "transfer_accuracy", split, transfer, l2=maps["transfer"][2], dimensions=dimensions)]


def _ncc_accuracy(model, name, full, split_data: SplitData, centres, present, batch_size) -> float:
    """NCC accuracy of the training split against its own centres: from the kept features, or from a
    second pass when the layer was too wide to keep."""
    if full is not None:
        predictions = torch.cat([ncc_predictions(full[start:start + batch_size], centres, present)
                                 for start in range(0, len(full), batch_size)])
        return (predictions == split_data.labels).double().mean().item()
    correct = torch.zeros((), dtype=torch.float64, device=centres.device)
    for _, _, images, labels, _ in split_data.batches(batch_size):
        flat = model.features(images)[name].flatten(1)
        correct += (ncc_predictions(flat, centres, present) == labels).sum()
    return correct.item() / len(split_data.labels)


def _row(layer: str, metric: str, split: str, value: float, **details) -> dict:
    return {"layer": layer, "metric": metric, "split": split, "value": float(value), **details}


def effective_depth_rows(rows: list[dict], layer_names: list[str], epsilon: float) -> list[dict]:
    """IntermediateNC's effective depth: the first layer whose NCC train accuracy is within epsilon of
    the last layer's (as a layer index into `layer_names`)."""
    from metrics.depth import effective_depth

    accuracy = {row["layer"]: row["value"] for row in rows if row["metric"] == "ncc_accuracy" and row["split"] == "train"}
    values = [accuracy[name] for name in layer_names if name in accuracy]
    return [_row("all", "effective_depth", "train", effective_depth(values, epsilon))]
