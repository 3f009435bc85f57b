"""measuring.analyse_runs(runs, experiment, plan, device) — measure every checkpoint of these runs that lacks a metric.

A transfer child (conf/plasticity.py `transfers`, read with its folder: RunRecord.transfer_child) is measured at its first and last checkpoints only, and there only for its
classifier's accuracy (what the transfer read takes), unless `child_checkpoints=all` (`checkpoints_to_measure`,
`metrics_to_measure`); the checkpoints and metrics left out are not pending, so a second call still finds nothing
new.

The per-checkpoint protocol of the analysis, as training/loop.py is training's: for each checkpoint, which
metrics are pending under their recipes -> the cell's lock -> the verified checkpoint's model -> the
engine (metrics/engine.py: one pass per split) -> the probe snapshot -> the cell, combined with what it
held and written atomically (measuring/store.py). analysis.py (its command line) and slurm/analysis_job.py
(one array task per run) call it; `metrics.measure` is the same engine on tensors, without the files.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pandas as pd
import torch

import data
from conf import Plan, SettingsError
from conf.analysis import Analysis
from conf.cli import describe_filter
from folders import CorruptFile, ExperimentFolder, RunFolderError, RunRecord
from measuring import snapshots, store
from measuring.curves import update_layer_curves
from measuring.inputs import check_module_file, hooked_layers_problem, load_model, splits_of, transfer_probe
from measuring.layout import StoreLayout
from metrics import engine, registry
from metrics import transfer as transfer_metrics
from models.hooked import LayerRunsTwice
from utils import ensure_writable_folder, one_line, progress_bar

logger = logging.getLogger("analysis")  # the analysis's lines, whichever module writes them


@dataclasses.dataclass
class Outcome:
    """What an analysis did: checkpoints by outcome, and one line per file or run it skipped."""

    measured: int = 0
    fresh: int = 0
    busy: int = 0
    corrupt: int = 0
    left_out: int = 0  # checkpoints of transfer children not measured by design (child_checkpoints=ends)
    skipped: list[str] = dataclasses.field(default_factory=list)

    def add(self, other: "Outcome") -> None:
        self.measured, self.fresh = self.measured + other.measured, self.fresh + other.fresh
        self.busy, self.corrupt = self.busy + other.busy, self.corrupt + other.corrupt
        self.left_out += other.left_out
        self.skipped += other.skipped


@dataclasses.dataclass
class RunInputs:
    """Everything measuring one run's checkpoints needs besides the checkpoint itself."""

    run: RunRecord
    plan: Plan
    device: torch.device
    question: "Question"
    names: tuple[str, ...]  # the metrics its checkpoints get (metrics_to_measure, those its transfer probe allows)
    train: engine.SplitData
    test: engine.SplitData
    num_classes: int
    transfer: transfer_metrics.TransferProbe | None
    transfer_task: str = ""  # the task and its images, or `none (why)`: a column of every row (the report reads it)


@dataclasses.dataclass(frozen=True)
class Question:
    """What a call asks of every checkpoint, worked out once from its analysis options (metrics/registry.py): each
    registered metric's recipe (what decides its numbers besides the checkpoint: rows under another are stale) and
    its options words (the `options` column: rows of other options sit beside these)."""

    analysis: Analysis
    recipes: dict[str, str]
    options: dict[str, str]

    @classmethod
    def of(cls, analysis: Analysis) -> "Question":
        return cls(analysis, registry.recipes(analysis), registry.options_texts(analysis))


def check_runs(experiment: ExperimentFolder, runs: dict[str, RunRecord]) -> None:
    """SettingsError naming the folder when the experiment has no runs (a mistyped out_dir or experiment), OSError
    when a file stands where its runs folder should be (the environment)."""
    try:
        experiment.runs_path.stat()  # a file in the way of out_dir raises NotADirectoryError, naming the path
    except FileNotFoundError:
        pass
    if not runs:
        raise SettingsError(f"{experiment.runs_path} holds no runs; check out_dir= and experiment= (or train them "
                            "first with python train.py ...)")


def chosen_runs(plan: Plan, experiment: ExperimentFolder, every_run: dict[str, RunRecord]) -> tuple[list[RunRecord], list[str]]:
    """(the runs this call measures, one line per run skipped): the command line's filter with their ancestors,
    those whose layers can be measured. Bad input — an unknown metric name, no runs, a filter that matches none, a
    `layers=` module a model lacks — is refused (SettingsError) before anything is written."""
    registry.select(plan.analysis.metrics)
    check_runs(experiment, every_run)
    runs, skipped = runs_of(every_run, plan.overrides, experiment.runs_path)
    runs, unmeasurable = measurable(runs, plan)
    return runs, skipped + unmeasurable


def measure_and_merge(runs: list[RunRecord], every_run: dict[str, RunRecord], experiment: ExperimentFolder,
                      plan: Plan) -> tuple[Outcome, store.Merged, int]:
    """Measure the runs' missing cells, then bring every run's part of the table and of the similarity table up to
    date (`every_run`: each as this call read it); (what was measured, the merge, the similarity rows). A read-only
    or full folder is refused before any work (OSError); with no usable run the tables are left as they are."""
    device = plan.execution.torch_device()
    for folder in (experiment.path, experiment.metrics_path):  # read-only or full: say so before any work
        ensure_writable_folder(folder)
    outcome = analyse_runs(runs, experiment, plan, device)
    if not runs:
        return outcome, store.Merged(), 0
    merged = store.merge(experiment, every_run)  # every call's current rows: this one's are added, none taken away
    return outcome, merged, snapshots.update_similarity(experiment, every_run)


def runs_of(runs: dict[str, RunRecord], overrides: tuple, runs_path: Path) -> tuple[list[RunRecord], list[str]]:
    """(the runs matching the command line's run settings, one line per run skipped). `depth=3,5` keeps runs with
    depth 3 or 5; none typed: all of them. A run whose settings file is missing, not JSON, unknown or edited is
    reported and skipped; a filter that matches no run is refused (SettingsError) before anything is written."""
    readable, skipped = [], []
    for run in runs.values():
        if run.settings is None:
            logger.error("%s; run skipped", run.problem)
            skipped.append(run.problem)
        else:
            readable.append(run)
    chosen = [run for run in readable if all(getattr(run.settings, key) in values for key, values in overrides)]
    chosen += ancestors(chosen, readable)
    if overrides and not chosen:
        present = "; ".join(f"{key} {', '.join(sorted({str(getattr(run.settings, key)) for run in readable}))}"
                            for key, _ in overrides)
        detail = f"the runs there have {present}" if readable else "no run there has usable settings"
        raise SettingsError(f"no run under {runs_path} matches {describe_filter(overrides)} ({detail}); "
                            "nothing was changed")
    return chosen, skipped


def ancestors(chosen: list[RunRecord], readable: list[RunRecord]) -> list[RunRecord]:
    """The runs among `readable` that a chosen run started from (its parent, their earlier stages), not chosen
    themselves: the words that trained a child (dataset=fashionmnist pretrain_dataset=mnist) trained its parent
    too, and its story is read against the parent's phases (figures/publish.py with_ancestors reads them)."""
    present = {run.run_id: run for run in readable}
    wanted, found = {run.run_id for run in chosen}, []
    for run in chosen:
        for run_id in run.ancestor_ids:  # RunRecord: the lineage rules asked once, when the folder was read
            if run_id in present and run_id not in wanted:
                wanted.add(run_id)
                found.append(present[run_id])
    return found


def measurable(runs: list[RunRecord], plan: Plan) -> tuple[list[RunRecord], list[str]]:
    """(the runs whose layers can be measured, one line per run that cannot: a layer module that runs twice in
    one pass); SettingsError for a `layers=` module a model lacks. Asked before anything is written, once per
    model (architecture and input shape), so a bad `layers=` leaves no cell, lock or folder behind."""
    usable, skipped, known = [], [], {}
    for run in runs:
        settings = run.settings
        model = (settings.arch, settings.depth, settings.width, settings.batch_norm, settings.patch_size,
                 settings.heads, settings.module_sha256, settings.dataset, settings.image_size)
        if model not in known:
            try:
                check_module_file(settings)  # a changed module file is the measuring's to report, not to import
                known[model] = hooked_layers_problem(run, plan.analysis.layers)
            except RunFolderError:
                known[model] = None  # left to analyse_run, which reports it by name
        if known[model]:
            logger.error("run %s: %s; run skipped", run.run_id, known[model])
            skipped.append(f"{run.run_id}: {known[model]}; run skipped")
        else:
            usable.append(run)
    return usable, skipped


def run_inputs(run: RunRecord, plan: Plan, question: Question, device) -> RunInputs:
    settings = run.settings
    check_module_file(settings)  # a user's module changed since the run: refused before anything is measured
    execution = plan.execution
    train, test, num_classes = splits_of(run, Path(execution.data_root), execution.download, device)
    probe, transfer_task = transfer_probe(settings, plan, train, test, num_classes, device)
    skipped = probe is None and plan.analysis.transfer_task != "none"  # asked for (or auto) and not done: say so
    logger.log(logging.WARNING if skipped else logging.INFO, "%s: transfer task %s", settings.run_id, transfer_task)
    names = engine.applicable(metrics_to_measure(run.transfer_child, plan.analysis), probe, plan.analysis)
    return RunInputs(run, plan, device, question, names, train, test, num_classes, probe, transfer_task)


def cell_frame(inputs: RunInputs, checkpoint: dict, model, checkpoint_sha256: str, names, snapshot_path: Path) -> pd.DataFrame:
    """One checkpoint's rows of the metrics `names`: every layer and split, with its run, iteration,
    epoch and stage, and each metric's recipe and options (the call's question: rows of other options sit beside
    them in the cell). The probe snapshot, when gathered, is written first (to
    `snapshot_path`): a cell that holds cka_previous_layer always has its snapshot beside it."""
    rows, layers = engine.measure_layers(model, inputs.train, inputs.test, inputs.num_classes, inputs.plan.analysis,
                                         seed=inputs.run.settings.seed, transfer=inputs.transfer, metrics=names)
    metric = snapshots.SNAPSHOT_METRIC
    question = inputs.question
    snapshot = snapshots.snapshot_of(layers, inputs.test, checkpoint, question.recipes[metric], question.options[metric],
                                     checkpoint_sha256, inputs.plan.analysis.probe_subset_size)
    if snapshot is not None:
        snapshots.write_snapshot(snapshot_path, snapshot)
    index = {layer: position for position, layer in enumerate(model.layer_names())}
    frame = pd.DataFrame(rows)
    frame.insert(0, "run_id", inputs.run.run_id)
    frame.insert(1, "iteration", checkpoint["iteration"])
    frame.insert(2, "epoch", checkpoint["epoch"])
    frame.insert(3, "stage", checkpoint["stage"])
    frame.insert(4, "parent_run_id", inputs.run.lineage.get("parent_run_id", ""))
    frame["layer_index"] = frame["layer"].map(index).fillna(-1).astype(int)
    frame["recipe"], frame["options"] = frame["metric"].map(question.recipes), frame["metric"].map(question.options)
    frame["depends_on"] = frame["metric"].map(lambda name: " ".join(registry.option_names(registry.METRICS[name])))
    frame["checkpoint_sha256"] = checkpoint_sha256
    frame["transfer_task"] = inputs.transfer_task  # which task transfer_accuracy read, or why there is none
    return frame


def pending_metrics(path: Path, checkpoint_sha256: str, question: Question, names) -> list[str]:
    """The metrics among `names` that the cell at `path` lacks under their recipes for the `question`
    (store.pending), with cka_previous_layer also when its probe snapshot under them is missing, unreadable or of
    another recipe."""
    names, metric = list(names), snapshots.SNAPSHOT_METRIC
    missing = store.pending(path, checkpoint_sha256, question.recipes, names)
    snapshot_path = StoreLayout.cell_snapshot_path(path, question.options[metric])
    if metric in names and metric not in missing and not snapshots.snapshot_fresh(
            snapshot_path, question.recipes[metric], checkpoint_sha256):
        missing.append(metric)
    return missing


def measure_cell(inputs: RunInputs, iteration: int, checkpoint_sha256: str, path: Path, outcome: Outcome) -> None:
    """Measure one checkpoint's missing metrics into its cell under the cell's lock, unless another
    process holds the lock or has finished them meanwhile; a corrupt checkpoint is reported and skipped."""
    with store.claim(path) as mine:
        if not mine:
            outcome.busy += 1  # another analysis process is measuring it
            return
        names = pending_metrics(path, checkpoint_sha256, inputs.question, inputs.names)
        if not names:
            outcome.fresh += 1  # another process measured it between our first look and the lock
            return
        try:
            checkpoint, model = load_model(inputs.run, iteration, inputs.device, inputs.plan.analysis.layers,
                                           inputs.plan.analysis.features_at)
        except CorruptFile as error:
            logger.error("%s; skipped", one_line(error))
            outcome.corrupt += 1
            outcome.skipped.append(one_line(error))
            return
        snapshot_path = StoreLayout.cell_snapshot_path(path, inputs.question.options[snapshots.SNAPSHOT_METRIC])
        frame = store.combine(path, cell_frame(inputs, checkpoint, model, checkpoint_sha256, names, snapshot_path),
                              checkpoint_sha256)
        store.write_cell(path, frame)
        outcome.measured += 1
        logger.info("%s iteration %d measured", inputs.run.run_id, checkpoint["iteration"])


# What LearnPhase's transfer read takes from a transfer child (findings/transfer.py): its classifier's test accuracy
# at its last checkpoint, and its start (its first checkpoint's iteration). Its layers' metrics feed no figure and
# no finding (children have no phases: findings/conditions.py) and cost 0.5 s a checkpoint against 0.08 s.
CHILD_METRICS = ("classifier_accuracy",)


def metrics_to_measure(transfer_child: bool, analysis) -> list[str]:
    """The metrics `analysis.metrics` selects that a run's checkpoints get: a transfer child's, under
    child_checkpoints=ends, only those the transfer read takes (CHILD_METRICS); every one otherwise."""
    names = registry.select(analysis.metrics)
    if analysis.child_checkpoints == "all" or not transfer_child:
        return names
    return [name for name in names if name in CHILD_METRICS]


def checkpoints_to_measure(transfer_child: bool, entries: dict[int, dict], child_checkpoints: str) -> dict[int, dict]:
    """The checkpoint entries the analysis measures: a transfer child's first and last only under
    child_checkpoints=ends (figures/transfer.py reads its start and end accuracy, nothing between), every
    one otherwise. A child still training has its newest checkpoint as its last (measured again at its end)."""
    if child_checkpoints == "all" or not transfer_child or len(entries) <= 2:
        return entries
    return {iteration: entries[iteration] for iteration in (min(entries), max(entries))}


def analyse_run(run: RunRecord, layout: StoreLayout, plan: Plan, question: Question, device,
                no_transfer: dict[str, str]) -> Outcome:
    """Measure the selected metrics of every checkpoint of one run that lacks them, of a transfer child its
    classifier accuracy at its ends only by default (checkpoints_to_measure, metrics_to_measure); RunFolderError
    when a side file of the run is unusable. `no_transfer`: {dataset: why it has no transfer task}, learnt in this
    call: the other runs of that dataset need not load their data again to learn it."""
    if run.problem:
        raise RunFolderError(run.problem)
    settings, entries = run.settings, run.entries
    chosen = checkpoints_to_measure(run.transfer_child, entries, plan.analysis.child_checkpoints)
    names = [name for name in metrics_to_measure(run.transfer_child, plan.analysis)
             if settings.dataset not in no_transfer or name in engine.applicable([name], None)]
    names = engine.without_snapshots(names, plan.analysis)
    pending = {iteration: entry for iteration, entry in chosen.items()
               if pending_metrics(layout.cell_path(run.run_id, iteration), entry["sha256"], question, names)}
    outcome = Outcome(fresh=len(chosen) - len(pending), left_out=len(entries) - len(chosen))
    if pending:
        inputs = run_inputs(run, plan, question, device)
        if inputs.transfer is None:
            no_transfer[settings.dataset] = inputs.transfer_task
        measure_cells(inputs, layout, pending, outcome)
    if settings.dataset in no_transfer:  # say why in every cell's rows of this question, measured now or before
        for iteration in entries:
            store.note(layout.cell_path(run.run_id, iteration), "transfer_task", no_transfer[settings.dataset],
                       question.options)
    update_layer_curves(layout, run, plan.execution, outcome.measured)
    return outcome


def measure_cells(inputs: RunInputs, layout: StoreLayout, pending: dict, outcome: Outcome) -> None:
    run_id = inputs.run.run_id
    bar = progress_bar(inputs.plan.execution.progress, len(pending), 0, f"measuring {run_id}", unit="checkpoint")
    try:
        for iteration, entry in sorted(pending.items()):
            if bar is not None:
                bar.update(1)
            measure_cell(inputs, iteration, entry["sha256"], layout.cell_path(run_id, iteration), outcome)
    finally:
        if bar is not None:
            bar.close()


def analyse_runs(runs: list[RunRecord], experiment: ExperimentFolder, plan: Plan, device) -> Outcome:
    """Every run in turn; one whose folder has an unusable file is reported and skipped, the others go on."""
    total, no_transfer, layout, question = Outcome(), {}, StoreLayout(experiment), Question.of(plan.analysis)
    for run in runs:
        try:
            total.add(analyse_run(run, layout, plan, question, device, no_transfer))
        except (RunFolderError, data.DataError, LayerRunsTwice) as error:  # a damaged side file, this run's
            # dataset missing, or a layer that runs twice only on real images (`measurable` finds the others first)
            logger.error("%s; run %s skipped", one_line(error), run.run_id)
            total.skipped.append(f"{run.run_id}: {one_line(error)}")
    return total
