"""python analysis.py [experiment=NAME] [key=value ...] — the analysis options.

They are not run settings: they never enter a run id. Each metric has its own *recipe*
(metrics/registry.py): its version and the options its statistics depend on. A metric's cells
computed under another recipe are stale and are computed again; `metrics`, `analysis_batch_size`,
`feature_cache_gb`, `figures`, `figure_formats` and `child_checkpoints` choose what and how fast, and enter no
recipe (but `analysis_batch_size` in classifier_accuracy_batch_statistics's: its batches are what it normalises
with).
"""

import dataclasses
from dataclasses import dataclass

from conf.errors import SettingsError
from conf.global_settings import DATASETS, check_fields, setting
from conf.words import field_readers, read_key_values

# The options that choose what and how fast, and decide no number: in no metric's recipe (tests/test_metrics.py
# checks). A call that changes only these asks the default question.
NO_RECIPE = ("metrics", "feature_cache_gb", "figures", "figure_formats", "child_checkpoints")


@dataclass(frozen=True)
class Analysis:
    """How checkpoints are measured (metrics/)."""

    # Names checked against metrics/registry.py when the analysis starts (conf imports the standard library only).
    metrics: str = setting("all", "the metrics to compute: all (every one that applies to the run but those measured on request only: cka_full) or names separated by commas, e.g. ncc_accuracy,cdnv or all,cka_full; adding one later computes only its cells")
    analysis_batch_size: int = setting(500, "examples per forward pass of the analysis (cost only, but the batches classifier_accuracy_batch_statistics normalises with: in its recipe only)", minimum=1)
    probe_dimensions: int = setting(512, "features are pooled to at most this many dimensions for the probes and the decoder", minimum=1)
    # The same names as models.POINTS (conf imports the standard library only; tests check they agree).
    features_at: str = setting("post_activation", "where each layer's features are taken: after the activation (DESIGN contract 5) or the linear/conv output before BN and ReLU (IntermediateNC; per family in docs/models.md)", choices=("post_activation", "pre_activation"))
    layers: str = setting("", "which modules' outputs are the layers: module paths separated by commas, read by forward hooks (e.g. layer1,layer2,layer3,layer4,fc); '' = the family's own (docs/models.md's model table)")
    # Both parts of the split must hold examples (metrics/engine.py fits on one, scores on the other:
    # an empty part is a ValueError). Below 1 % the held-out part of a small split is often empty; above
    # a half the l2 is chosen for a fit on less data than the refit on the whole split it is used for.
    heldout_fraction: float = setting(0.1, "part of the training split held out to choose the ridge regularisation", minimum=0.01, maximum=0.5)
    effective_depth_epsilon: float = setting(0.01, "effective depth: first layer whose NCC train accuracy is within this of the last layer's (effective_depth), or whose NCC train error is at most this (effective_depth_literal)", minimum=0.0, maximum=1.0)
    probe_subset_size: int = setting(1024, "representation similarity (CKA): test examples, a fixed seeded subset shared by every run of a dataset, whose pooled features each checkpoint keeps as its snapshot (0 = none)", minimum=0)
    dormant_threshold: float = setting(0.025, "dormant units (Sokar et al., ICML 2023): a unit whose mean absolute activation is at most this fraction of its layer's mean over units is dormant", minimum=0.0, maximum=1.0)
    linear_maps: str = setting("closed_form", "probes and decoder: closed_form (ridge), or adam / sgd trained 20 epochs as LearnPhase does", choices=("closed_form", "adam", "sgd"))
    # The names of data/transfer.py's TRANSFER_TASKS (conf imports the standard library only; tests/test_transfer.py checks they agree).
    transfer_task: str = setting("auto", "task of the transfer probe (LearnPhase): auto = colour_dominance for RGB, brightness for grayscale; none; or a task (a task that does not apply to a run is skipped, with the reason logged and in the report)", choices=("auto", "none", "colour_dominance", "colour_dominance_raw", "brightness", "other_dataset_classes"))
    transfer_dataset: str = setting("own", "images the transfer task reads: own = the run's (LearnPhase's code), or another dataset of the same image shape, e.g. cifar100 (its README)", choices=("own", *DATASETS))
    feature_cache_gb: float = setting(4.0, "keep the training split's features up to this size for the train accuracies, else a second pass (cost only: in no recipe)", minimum=0.0)
    figures: bool = setting(True, "after measuring, draw every figure and write the report (in no recipe)")
    # PDFs double the drawing time (benchmarks/readout_cost.py) and the report shows the PNGs: vector copies on request.
    figure_formats: str = setting("png", "files of each figure: png (what the report shows), or png,pdf for a PDF beside each PNG (for papers; drawing takes about twice as long); PDFs drawn before stay until their figure changes (in no recipe)", choices=("png", "png,pdf"))
    # The transfer read-out (findings/transfer.py) takes a child's first measured checkpoint as its start and its
    # classifier's accuracy at its last as its end: the checkpoints between, and the layers' metrics, cost most of a
    # transfer grid's analysis and feed no figure or finding of it (children have no phases).
    child_checkpoints: str = setting("ends", "checkpoints of a transfer child (start_from_iteration other than final, or another pretrain_dataset): ends = its classifier accuracy at its first and last checkpoints only (its start and end, all the transfer read takes), no layer metrics and no rows in the similarity table; all = every metric at every checkpoint (full curves) and its similarity rows; every other run is measured in full (in no recipe)", choices=("ends", "all"))

    def __post_init__(self):
        check_fields(self)
        names = [name.strip() for name in self.layers.split(",") if name.strip()]
        twice = next((name for position, name in enumerate(names) if name in names[:position]), None)
        if twice:  # one module's output measured twice as two "layers" would double-count it in every figure
            raise SettingsError(f"layers={self.layers} names {twice} twice; accepted: each module path once")


def check_heldout_split(heldout_fraction: float, held_out: int, examples: int) -> None:
    """SettingsError when the held-out draw left the held-out part or the fitting part of a training
    split of `examples` empty. The draw is random per example, so whether that happens depends on the
    split's size (a small train_subset, a stage-1 subset): only the analysis knows it, once the data
    is loaded (metrics/engine.py calls this right after the draw)."""
    if 0 < held_out < examples:
        return
    empty = "held-out" if held_out == 0 else "fitting"
    raise SettingsError(f"heldout_fraction={heldout_fraction} left the {empty} part of the {examples} training "
                        "examples empty; accepted: a heldout_fraction nearer 0.5, or a training split of more "
                        "examples (train_subset, synthetic_train_size)")


def analysis_of(text: str) -> Analysis:
    """The analysis options that words such as a row's `options` column name (`layers=blocks.0,blocks.1
    probe_dimensions=256`; the defaults for the others); SettingsError naming a word that is not one."""
    fields = {item.name: item for item in dataclasses.fields(Analysis)}

    def refuse(name: str) -> SettingsError:
        return SettingsError(f"{name!r} is not an analysis option; accepted: {', '.join(fields)} as name=value")

    values = read_key_values(text.split(), {"analysis": field_readers(fields)}, refuse)["analysis"]
    return Analysis(**values)


def asks_defaults(analysis: Analysis) -> bool:
    """Whether every option that decides a number is at its default: the call's rows are those whose `options`
    column is '' (measuring/store.py)."""
    return not question_words(analysis)


def question_words(analysis: Analysis) -> str:
    """The options that decide numbers (all but NO_RECIPE) that differ from the defaults, as the command line's
    words, sorted: the question a call asks of the tables ('' for the default one)."""
    return option_words(analysis, [item.name for item in dataclasses.fields(Analysis) if item.name not in NO_RECIPE])


def option_value(analysis: Analysis, name: str):
    """An option's value as rows and recipes say it: `layers` as module paths joined by commas, without spaces."""
    value = getattr(analysis, name)
    return ",".join(part.strip() for part in value.split(",") if part.strip()) if name == "layers" else value


def option_words(analysis: Analysis, names) -> str:
    """The options among `names` that differ from the defaults, as the command line's words, sorted (`layers=
    blocks.0,head probe_dimensions=64`; '' when none does): a row's `options` column, for `names` its metric's
    `depends_on` (metrics/registry.py); and which rows a call's question reads (figures/publish.py)."""
    defaults = Analysis()
    return " ".join(f"{name}={option_value(analysis, name)}" for name in sorted(set(names))
                    if option_value(analysis, name) != option_value(defaults, name))
