"""The metric registry: a metric is one function from a layer's gathered statistics to a value per split.

    @register("cdnv", version=1, paper="Galanti et al., TMLR 2023", needs=("class_moments",))
    def class_distance_normalised_variance(layer: LayerResults) -> dict[str, float]:
        return {split: cdnv(moments) for split, moments in layer.classes.items()}

`needs` names the statistics it reads (metrics/statistics.py: class moments, ridge maps to a target,
their predictions, ...); the engine (metrics/engine.py) gathers the union of the selected metrics'
needs in one pass per split, so adding a metric on existing statistics is one function here and one
test. Each metric has its own recipe (`recipe`): its version, its statistics' versions and the
analysis options they depend on. Cells are computed per metric: selecting one more metric later
computes only its cells, and changing `transfer_task` recomputes only the transfer probe's.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from conf.analysis import analysis_of, option_value, option_words
from conf.errors import SettingsError
from metrics.moments import ClassMoments, cdnv
from metrics.ridge import fitted_error, ridge_mse
from metrics.statistics import LinearMap, need_options, need_versions

ENGINE_VERSION = 2  # in every recipe: bumped when the engine changes what any metric computes, so all are measured again
SPLITS = ("train", "test")  # every metric is measured on both, in this order (the rows and the engine's passes)


@dataclass
class LayerResults:
    """What the engine gathered about one layer, for the selected metrics: per split, class moments,
    correct NCC predictions, the fitted maps by target (with their moments and correct predictions),
    the classifier's sums; `statistics` holds every gathered statistic by name (for new statistics)."""

    name: str
    splits: tuple[str, ...]
    count: dict[str, int]  # examples of the run's own data per split
    classes: dict[str, ClassMoments] = field(default_factory=dict)
    ncc_correct: dict[str, float] = field(default_factory=dict)
    maps: dict[str, LinearMap] = field(default_factory=dict)  # "classes" (probe), "image" (decoder), "transfer"
    classifier: dict[str, tuple[float, float]] = field(default_factory=dict)  # split -> (loss, accuracy)
    statistics: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    name: str
    version: int
    paper: str
    function: Callable
    needs: tuple[str, ...]
    details: Callable[[LayerResults], dict] | None = None  # recorded beside the value (chosen l2, dimensions)
    options: tuple[str, ...] = ()  # analysis options it reads itself (its statistics' are added)
    across_layers: bool = False  # function(layers: {name: LayerResults}, layer_names, options) -> rows
    # an accuracy's examples per split (its `examples` column): the read-out's resolution, a few examples' worth
    examples: Callable[[LayerResults], dict] | None = None
    on_request: bool = False  # left out of `metrics=all`, measured only when named (a cost most analyses need not pay)

    def depends_on(self) -> tuple[str, ...]:
        """Every analysis option its values depend on."""
        options = list(self.options)
        for need in self.needs:
            options += need_options(need)
        return tuple(sorted(set(options)))


METRICS: dict[str, Metric] = {}


def register(name: str, *, version: int, paper: str, needs: tuple[str, ...], details=None, options=(),
             across_layers: bool = False, examples=None, on_request: bool = False):
    def decorator(function):
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        for need in needs:
            need_options(need)  # an unknown statistic or target fails here, at import
        METRICS[name] = Metric(name, version, paper, function, tuple(needs), details, tuple(options), across_layers,
                               examples, on_request)
        return function

    return decorator


PLUGIN_MARKS = ("@register(", "@statistic")  # a module that registers a metric or a statistic says so


def discover() -> None:
    """Import every module of this package that registers a metric or a statistic (its source decorates a
    function or class with one of PLUGIN_MARKS): a metric in a new module is measured with nothing else
    edited, never silently absent for want of an import. Modules already imported are left as they are."""
    for path in sorted(Path(__file__).parent.glob("*.py")):
        name = f"{__package__}.{path.stem}"
        if name not in sys.modules and any(mark in path.read_text() for mark in PLUGIN_MARKS):
            importlib.import_module(name)


def option_names(metric: Metric) -> tuple[str, ...]:
    """The analysis options the metric's numbers depend on: those it and its statistics read, and `layers` (other
    layers, other rows), sorted: a row's `depends_on` column, as words."""
    return tuple(sorted({*metric.depends_on(), "layers"}))


def chosen_options(metric: Metric, options) -> dict:
    """{option: value} of the analysis options that decide the metric's numbers: those it and its statistics
    read, and `layers` (other layers, other rows)."""
    return {**{option: getattr(options, option) for option in metric.depends_on()},
            "layers": option_value(options, "layers")}


def recipe(metric: Metric, options) -> str:
    """Hash of what decides the metric's numbers besides the checkpoint: the engine's version, the
    metric's, its statistics' and the analysis options they depend on. A cell of the metric computed
    under another recipe is stale; the other metrics' cells are not."""
    statistics = {}
    for need in metric.needs:
        statistics.update(need_versions(need))
    text = json.dumps({"engine": ENGINE_VERSION, "metric": metric.name, "version": metric.version,
                       "statistics": statistics, "options": chosen_options(metric, options)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def recipes(options) -> dict[str, str]:
    """{metric: recipe} of every registered metric under these analysis options."""
    return {name: recipe(metric, options) for name, metric in METRICS.items()}


def options_text(metric: Metric, options) -> str:
    """The metric's options that differ from the defaults, as the command line's words (`layers=blocks.0,head
    transfer_task=brightness`, sorted; '' under the defaults): a row's `options` column. It tells the rows of one
    question from another call's, which sit beside them in the cells and the table (measuring/store.py)."""
    return option_words(options, option_names(metric))


def options_texts(options) -> dict[str, str]:
    """{metric: options_text} of every registered metric under these analysis options."""
    return {name: options_text(metric, options) for name, metric in METRICS.items()}


def current_recipe(name: str, text: str) -> str | None:
    """The recipe metric `name` has now under the options of an `options` column (`text`): a row of that
    metric and options is current when it was computed under it. None when the metric is no longer registered
    or the words no longer read (the row is of another version of the lab)."""
    metric = METRICS.get(name)
    if metric is None:
        return None
    try:
        return recipe(metric, analysis_of(text))
    except SettingsError:
        return None


def select(text: str) -> tuple[str, ...]:
    """`metrics=` -> the metric names it selects, in registry order: names separated by commas, among them
    `all` (every metric but those measured on request, which are selected by name: `all,cka_full`);
    SettingsError naming the unknown ones and the accepted values."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name != "all" and name not in METRICS]
    if unknown or not names:
        on_request = [name for name, metric in METRICS.items() if metric.on_request]
        besides = f" (every metric but {', '.join(on_request)}, measured only when named)" if on_request else ""
        raise SettingsError(f"metrics={text} names {', '.join(unknown) or 'no metric'}; accepted: all{besides}, or "
                            f"any of {', '.join(METRICS)}, separated by commas")
    return tuple(name for name, metric in METRICS.items()
                 if name in names or ("all" in names and not metric.on_request))


def _accuracy(fitted: LinearMap) -> dict[str, float]:
    return {split: float(correct) / fitted.count[split] for split, correct in fitted.correct.items()}


def _map_examples(target: str):
    return lambda layer: dict(layer.maps[target].count)


def _map_details(target: str):
    return lambda layer: {"l2": layer.maps[target].l2, "dimensions": layer.maps[target].dimensions}


# Accuracies: each row carries its `examples` (findings/noise.py: a verdict's resolution is a few of them).
@register("ncc_accuracy", version=2, paper="Galanti et al., TMLR 2023 (IntermediateNC)", needs=("ncc",),
          examples=lambda layer: dict(layer.count))
def ncc_accuracy(layer: LayerResults) -> dict[str, float]:
    """Nearest class centre accuracy; centres from the training split with the labels the run trained on."""
    return {split: correct / layer.count[split] for split, correct in layer.ncc_correct.items()}


@register("cdnv", version=1, paper="Galanti et al., TMLR 2023 (IntermediateNC)", needs=("class_moments",))
def class_distance_normalised_variance(layer: LayerResults) -> dict[str, float]:
    """Mean over class pairs i < j of (Var_i + Var_j) / (2 ‖μ_i − μ_j‖²), on each split's own moments."""
    return {split: cdnv(moments) for split, moments in layer.classes.items()}


@register("probe_accuracy", version=2, paper="linear probe (closed-form ridge to one-hot classes)",
          needs=("ridge_correct:classes",), details=_map_details("classes"), examples=_map_examples("classes"))
def probe_accuracy(layer: LayerResults) -> dict[str, float]:
    return _accuracy(layer.maps["classes"])


# Colour dominance reads the normalised image, as LearnPhase's code does (the raw uint8 pixels' rule is the transfer
# task colour_dominance_raw).
@register("transfer_accuracy", version=3, paper="Schneider & Prabhushankar, AAAI 2024 (LearnPhase): transfer task",
          needs=("ridge_correct:transfer",), details=_map_details("transfer"), examples=_map_examples("transfer"))
def transfer_accuracy(layer: LayerResults) -> dict[str, float]:
    """A probe for a task the network never trained on (data/transfer.py: colour dominance, brightness,
    the other dataset's classes); only for a run with a transfer task (transfer_task=)."""
    return _accuracy(layer.maps["transfer"])


@register("reconstruction_mse", version=1, paper="Schneider & Prabhushankar, AAAI 2024 (LearnPhase): linear decoder",
          needs=("ridge_test:image",), details=_map_details("image"))
def reconstruction_mse(layer: LayerResults) -> dict[str, float]:
    """Mean squared error per pixel of the best linear map from the layer to the normalised input; not
    for the input itself (the identity reconstructs it exactly: it measures nothing)."""
    if "image" not in layer.maps:  # the input layer (metrics/engine.py: SKIPPED_TARGETS)
        return {}
    decoder = layer.maps["image"]
    values = {split: ridge_mse(moments, decoder.weights, decoder.bias, decoder.precision)
              for split, moments in decoder.moments.items() if split != "train" or math.isnan(decoder.l2)}
    if "train" not in values:  # the closed form's own data: its error in O(DK) (metrics/ridge.py)
        train = decoder.moments["train"]
        values["train"] = fitted_error(train, decoder.weights, decoder.l2).item() / (train.count * train.targets)
    return dict(sorted(values.items(), key=lambda item: SPLITS.index(item[0])))


@register("classifier_loss", version=1, paper="the network's own cross-entropy", needs=("classifier",))
def classifier_loss(layer: LayerResults) -> dict[str, float]:
    return {split: loss for split, (loss, _) in layer.classifier.items()}


@register("classifier_accuracy", version=2, paper="the network's own accuracy", needs=("classifier",),
          examples=lambda layer: dict(layer.count))
def classifier_accuracy(layer: LayerResults) -> dict[str, float]:
    return {split: accuracy for split, (_, accuracy) in layer.classifier.items()}


# Every metric is measured in eval mode: BatchNorm normalises with its running statistics. Those can lag the weights
# far behind (a torchvision MobileNetV3, BatchNorm momentum 0.01, scored 0.09 in eval mode and 0.92 with batch
# statistics), so the network's accuracy with each test batch's own statistics is measured beside them;
# figures/report.py `eval_mode_lags` says where the two part.
@register("classifier_accuracy_batch_statistics", version=1,
          paper="the network's own accuracy with BatchNorm on batch statistics (train-mode BatchNorm)",
          needs=("batch_statistics",), examples=lambda layer: dict(layer.statistics["batch_statistics"].count))
def classifier_accuracy_batch_statistics(layer: LayerResults) -> dict[str, float]:
    """Test accuracy with every BatchNorm layer normalising with each batch's own mean and variance (batches of
    `analysis_batch_size`), everything else in eval mode (dropout off); equal to classifier_accuracy for a model
    without BatchNorm. A batch of one example is not predicted (its `examples` column counts those that were)."""
    gathered = layer.statistics.get("batch_statistics")  # gathered on `logits` only
    if gathered is None:
        return {}
    return {split: float(correct) / gathered.count[split] for split, correct in gathered.correct.items()}


@register("effective_depth", version=1, paper="Galanti et al., TMLR 2023 (IntermediateNC): effective depth",
          needs=("ncc",), options=("effective_depth_epsilon",), across_layers=True)
def effective_depth_rows(layers: dict[str, LayerResults], layer_names: list[str], options) -> list[dict]:
    """The first layer whose NCC train accuracy is within epsilon of the last layer's (a layer index
    into `layer_names`), as one row of layer `all`."""
    from metrics.depth import effective_depth

    values = [ncc_accuracy(layers[name])["train"] for name in layer_names if name in layers]
    return [{"layer": "all", "metric": "effective_depth", "split": "train",
             "value": float(effective_depth(values, options.effective_depth_epsilon))}]


@register("effective_depth_literal", version=1,
          paper="Galanti et al., TMLR 2023 (IntermediateNC): effective depth, their definition",
          needs=("ncc",), options=("effective_depth_epsilon",), across_layers=True)
def effective_depth_literal_rows(layers: dict[str, LayerResults], layer_names: list[str], options) -> list[dict]:
    """The first layer whose NCC train error is at most epsilon (a layer index into `layer_names`), NaN
    when none is: the paper's definition, beside `effective_depth` (against the last layer), which names
    the logits whenever no intermediate layer collapses."""
    from metrics.depth import effective_depth_literal

    values = [ncc_accuracy(layers[name])["train"] for name in layer_names if name in layers]
    return [{"layer": "all", "metric": "effective_depth_literal", "split": "train",
             "value": effective_depth_literal(values, options.effective_depth_epsilon)}]


# Last, once every name above exists (the plugins import them): the metric and statistic modules, in the
# order of their file names, so the registry's order (and the table's) never depends on who imported what.
discover()
