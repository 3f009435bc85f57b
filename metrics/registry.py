"""The metric registry: a metric is one function from a layer's collected statistics to a value per split.

    @register("cdnv", version=1, paper="Galanti et al., TMLR 2023")
    def class_distance_normalised_variance(layer: LayerResults) -> dict[str, float]:
        return {split: cdnv(layer.classes[split]) for split in layer.splits}

The engine (metrics/engine.py) makes one forward pass per split and collects, for every layer, the
statistics in `LayerResults`; every registered metric then reads them, so adding a metric that
needs no new statistic is one function here and one test. A metric's `version` enters the analysis
recipe: bump it when its definition changes and every cell it wrote is computed again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from metrics.moments import ClassMoments, cdnv
from metrics.ridge import CrossMoments, ridge_mse


@dataclass
class LinearMap:
    """A fitted ridge map (weights, bias), its chosen relative l2, and its data's moments per split."""

    weights: object
    bias: object
    l2: float
    moments: dict[str, CrossMoments] = field(default_factory=dict)


@dataclass
class LayerResults:
    """Everything the engine collected about one layer: per split, class moments, correct counts of
    the NCC rule and the probes, and the fitted linear maps (probe, transfer probe, decoder)."""

    splits: tuple[str, ...]
    count: dict[str, int]
    classes: dict[str, ClassMoments]
    correct: dict[str, dict[str, float]]  # split -> {"ncc", "probe", "transfer"} -> correct predictions
    maps: dict[str, LinearMap]  # "probe", "transfer", "reconstruction"
    dimensions: int  # width of the pooled features the maps were fitted on
    transfer_count: dict[str, int]  # examples of the transfer task per split (another dataset's, or the same)


@dataclass(frozen=True)
class Metric:
    name: str
    version: int
    paper: str
    function: Callable[[LayerResults], dict[str, float]]
    details: Callable[[LayerResults], dict] | None = None  # recorded beside the value (chosen l2, dimensions)


METRICS: dict[str, Metric] = {}


def register(name: str, *, version: int, paper: str, details: Callable[[LayerResults], dict] | None = None):
    def decorator(function):
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        METRICS[name] = Metric(name, version, paper, function, details)
        return function

    return decorator


def versions() -> dict[str, int]:
    return {name: metric.version for name, metric in METRICS.items()}


def _map_details(key: str):
    return lambda layer: {"l2": layer.maps[key].l2, "dimensions": layer.dimensions}


def _accuracy(layer: LayerResults, key: str) -> dict[str, float]:
    counts = layer.transfer_count if key == "transfer" else layer.count
    return {split: layer.correct[split][key] / counts[split] for split in layer.splits}


@register("ncc_accuracy", version=1, paper="Galanti et al., TMLR 2023 (IntermediateNC)")
def ncc_accuracy(layer: LayerResults) -> dict[str, float]:
    """Nearest class centre accuracy; centres from the training split with the labels the run trained on."""
    return _accuracy(layer, "ncc")


@register("cdnv", version=1, paper="Galanti et al., TMLR 2023 (IntermediateNC)")
def class_distance_normalised_variance(layer: LayerResults) -> dict[str, float]:
    """Mean over class pairs i < j of (Var_i + Var_j) / (2 ‖μ_i − μ_j‖²), on each split's own moments."""
    return {split: cdnv(layer.classes[split]) for split in layer.splits}


@register("probe_accuracy", version=1, paper="linear probe (closed-form ridge to one-hot classes)",
          details=_map_details("probe"))
def probe_accuracy(layer: LayerResults) -> dict[str, float]:
    return _accuracy(layer, "probe")


def _transfer_details(layer: LayerResults) -> dict:
    return _map_details("transfer")(layer) if "transfer" in layer.maps else {}


# Version 2: colour dominance reads the normalised image, as LearnPhase's code does (version 1 summed
# the raw uint8 pixels; that rule is the transfer task colour_dominance_raw now).
@register("transfer_accuracy", version=2, paper="Schneider & Prabhushankar, AAAI 2024 (LearnPhase): transfer task",
          details=_transfer_details)
def transfer_accuracy(layer: LayerResults) -> dict[str, float]:
    """A probe for a task the network never trained on (data/transfer.py: colour dominance, brightness,
    the other dataset's classes); no value when the run has no transfer task (transfer_task=)."""
    return _accuracy(layer, "transfer") if "transfer" in layer.maps else {}


@register("reconstruction_mse", version=1, paper="Schneider & Prabhushankar, AAAI 2024 (LearnPhase): linear decoder",
          details=_map_details("reconstruction"))
def reconstruction_mse(layer: LayerResults) -> dict[str, float]:
    """Mean squared error per pixel of the best linear map from the layer to the normalised input."""
    decoder = layer.maps["reconstruction"]
    return {split: ridge_mse(decoder.moments[split], decoder.weights, decoder.bias) for split in layer.splits}
