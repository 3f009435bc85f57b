"""python analysis.py [experiment=NAME] [key=value ...] — per-layer metrics of every checkpoint not yet measured, then every figure and the report.

Measures the runs in `<out_dir>/<experiment>/runs/` (run settings on the command line filter them:
`depth=3,5` keeps the runs of depth 3 or 5). Writes
`<out_dir>/<experiment>/metrics/<run_id>/iteration_*.parquet` (one file per checkpoint) and
merges them into `<out_dir>/<experiment>/metrics.parquet` (a folder of per-run parts that
pandas.read_parquet reads as one table; a run's part is rewritten only when its cells changed, and
holds only rows fresh under their metric's recipe): one row per (run_id, iteration, layer, metric, split)
with `value`, the layer's index, the epoch, the stage (warm starts: 1 = on the subset, 2 = on all
data), the parent run of a warm-started run, and the run's settings as columns. A stage-1
run's train split is its subset.
Incremental: a metric already measured on a checkpoint under its recipe is not measured again
(`metrics=` chooses the metrics; adding one computes only its cells); runs still training are
measured up to their newest checkpoint.

Then draws every figure from the table into `<out_dir>/<experiment>/figures/` (PNG and PDF;
figures/) and writes `<out_dir>/<experiment>/report.html` (settings that vary, runs and their state,
figures, the learning-phase table) and `phases.csv`.

    python analysis.py figures experiment=learnphase
        redraw the figures and the report from the table only (no model is run)
    python analysis.py experiment=demo launcher=slurm
        the metrics, one Slurm array task per run (cluster options as for sh train.sh); then `figures`
    python analysis.py features RUN_DIR iteration=256 split=test out=feats.npz
        every layer's features (as the metrics see them) and the labels of one split, for one's own analyses
        (subset=probe: the probe snapshot's examples and pooled features instead)
    python analysis.py import DIR arch=... dataset=... [out_dir=...]
        checkpoints trained elsewhere (a folder of state dicts, the iteration in each file's name) become a
        run that the analysis, figures and report read as any other (metrics/imported.py)
    python analysis.py similarity RUN_DIR_A RUN_DIR_B [align=iteration|stage] [out=cka.csv]
        linear CKA of every layer of run A with the same layer of run B at matching checkpoints (from the
        probe snapshots; align=stage lines a warm-started run's stage 2 up with a run from scratch)

Exit codes: 0 done; 1 a file was skipped (a corrupt checkpoint, a run whose settings file is unusable:
each is logged by name and listed at the end, the other runs are measured and merged) or the
environment failed (a read-only or full folder, a file in the way); 2 bad input (nothing written).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import pandas as pd
import torch

import data
from checkpointing import CorruptFile, ExperimentFolder, RunFolder, RunFolderError
from conf import Execution, Plan, Settings, SettingsError, parse_arguments
from metrics import engine, registry, snapshots, store
from metrics import transfer as transfer_metrics
from metrics.inputs import check_module_file, load_model, splits_of, transfer_probe
from utils import (describe_environment_error, ensure_writable_folder, one_line, progress_bar,
                   resolve_device, setup_logging)

logger = logging.getLogger("analysis")


@dataclasses.dataclass
class Outcome:
    """What an analysis did: checkpoints by outcome, and one line per file or run it skipped."""

    measured: int = 0
    fresh: int = 0
    busy: int = 0
    corrupt: int = 0
    skipped: list[str] = dataclasses.field(default_factory=list)

    def add(self, other: "Outcome") -> None:
        self.measured, self.fresh = self.measured + other.measured, self.fresh + other.fresh
        self.busy, self.corrupt = self.busy + other.busy, self.corrupt + other.corrupt
        self.skipped += other.skipped


@dataclasses.dataclass
class RunInputs:
    """Everything measuring one run's checkpoints needs besides the checkpoint itself."""

    settings: Settings
    folder: RunFolder
    plan: Plan
    device: torch.device
    recipes: dict[str, str]  # {metric: its current recipe} (metrics/registry.py)
    train: engine.SplitData
    test: engine.SplitData
    num_classes: int
    transfer: transfer_metrics.TransferProbe | None
    lineage: dict
    transfer_task: str = ""  # the task and its images, or `none (why)`: a column of every row (the report reads it)


def read_table(experiment_dir: str | Path) -> pd.DataFrame:
    """`analysis.read_table("outputs/demo")`: the experiment's metrics table as one frame, a row per (run_id,
    iteration, layer, metric, split) with its value and the run's settings as columns (what the figures
    read). SettingsError when it has not been measured yet."""
    from figures.publish import read_parquet_again_if_changed

    path = ExperimentFolder(experiment_dir).table_path
    try:
        return read_parquet_again_if_changed(path)
    except FileNotFoundError:
        raise SettingsError(f"{path} does not exist; measure the experiment first (python analysis.py "
                            f"out_dir=... experiment=...)") from None


def recipes(plan: Plan) -> dict[str, str]:
    """{metric: recipe} of every registered metric under the plan's analysis options: what decides a
    metric's numbers besides the checkpoint. A metric's rows computed under another recipe are stale."""
    return registry.recipes(plan.analysis)


def apply_threads(execution: Execution) -> None:
    """`threads=N`: torch's CPU threads (0 keeps torch's default). On a busy machine torch's own
    choice oversubscribes the cores and its threads spin-wait on each other (65 s instead of 10 s)."""
    if execution.threads:
        torch.set_num_threads(execution.threads)


def run_folders_of(experiment: ExperimentFolder) -> list[RunFolder]:
    """The experiment's run folders; SettingsError naming the folder when there are none (a mistyped
    out_dir or experiment), OSError when a file stands where a folder should be (the environment)."""
    try:
        experiment.runs_path.stat()  # a file in the way of out_dir raises NotADirectoryError, naming the path
        folders = experiment.run_folders()
    except FileNotFoundError:
        folders = []
    if not folders:
        raise SettingsError(f"{experiment.runs_path} holds no runs; check out_dir= and experiment= (or train them "
                            "first with python train.py ...)")
    return folders


def runs_of(experiment: ExperimentFolder, overrides: tuple) -> tuple[list[Settings], list[str]]:
    """(settings of the runs matching the command line's run settings, one line per run skipped).
    `depth=3,5` keeps runs with depth 3 or 5; none typed: all of them. A run whose settings file is
    missing, not JSON, unknown or edited is reported and skipped; a filter that matches no run is
    refused (SettingsError) before anything is written."""
    readable, skipped = [], []
    for folder in run_folders_of(experiment):
        try:
            readable.append(folder.read_settings())
        except RunFolderError as error:
            logger.error("%s; run skipped", one_line(error))
            skipped.append(one_line(error))
    chosen = [settings for settings in readable
              if all(getattr(settings, key) in values for key, values in overrides)]
    if overrides and not chosen:
        from figures.publish import describe_filter

        present = "; ".join(f"{key} {', '.join(sorted({str(getattr(settings, key)) for settings in readable}))}"
                            for key, _ in overrides)
        detail = f"the runs there have {present}" if readable else "no run there has usable settings"
        raise SettingsError(f"no run under {experiment.runs_path} matches {describe_filter(overrides)} ({detail}); "
                            "nothing was changed")
    return chosen, skipped


def run_inputs(settings: Settings, folder: RunFolder, plan: Plan, device) -> RunInputs:
    check_module_file(settings)  # a user's module changed since the run: refused before anything is measured
    execution = plan.execution
    train, test, num_classes = splits_of(settings, folder, Path(execution.data_root), execution.download, device)
    probe, transfer_task = transfer_probe(settings, plan, train, test, num_classes, device)
    skipped = probe is None and plan.analysis.transfer_task != "none"  # asked for (or auto) and not done: say so
    logger.log(logging.WARNING if skipped else logging.INFO, "%s: transfer task %s", settings.run_id, transfer_task)
    return RunInputs(settings, folder, plan, device, recipes(plan), train, test, num_classes, probe,
                     folder.read_lineage(), transfer_task)


def cell_frame(inputs: RunInputs, checkpoint: dict, model, checkpoint_sha256: str, names, snapshot_path: Path) -> pd.DataFrame:
    """One checkpoint's rows of the metrics `names`: every layer and split, with its run, iteration,
    epoch and stage, and each metric's recipe. The probe snapshot, when gathered, is written first (to
    `snapshot_path`): a cell that holds cka_previous_layer always has its snapshot beside it."""
    rows, layers = engine.measure_layers(model, inputs.train, inputs.test, inputs.num_classes, inputs.plan.analysis,
                                         seed=inputs.settings.seed, transfer=inputs.transfer, metrics=names)
    snapshot = snapshots.snapshot_of(layers, inputs.test, checkpoint, inputs.recipes[snapshots.SNAPSHOT_METRIC],
                                     checkpoint_sha256, inputs.plan.analysis.probe_subset_size)
    if snapshot is not None:
        snapshots.write_snapshot(snapshot_path, snapshot)
    index = {layer: position for position, layer in enumerate(model.layer_names())}
    frame = pd.DataFrame(rows)
    frame.insert(0, "run_id", inputs.settings.run_id)
    frame.insert(1, "iteration", checkpoint["iteration"])
    frame.insert(2, "epoch", checkpoint["epoch"])
    frame.insert(3, "stage", checkpoint.get("stage", 1))
    frame.insert(4, "parent_run_id", inputs.lineage.get("parent_run_id", ""))
    frame["layer_index"] = frame["layer"].map(index).fillna(-1).astype(int)
    frame["recipe"], frame["checkpoint_sha256"] = frame["metric"].map(inputs.recipes), checkpoint_sha256
    return frame


def pending_metrics(path: Path, checkpoint_sha256: str, current: dict[str, str], names) -> list[str]:
    """The metrics among `names` that the cell at `path` lacks under their recipes (store.pending), with
    cka_previous_layer also when its probe snapshot is missing, unreadable or of another recipe."""
    names = list(names)
    missing = store.pending(path, checkpoint_sha256, current, names)
    metric = snapshots.SNAPSHOT_METRIC
    if metric in names and metric not in missing and not snapshots.snapshot_fresh(
            ExperimentFolder.cell_snapshot_path(path), current[metric], checkpoint_sha256):
        missing.append(metric)
    return missing


def measure_cell(inputs: RunInputs, iteration: int, checkpoint_sha256: str, path: Path, outcome: Outcome) -> None:
    """Measure one checkpoint's missing metrics into its cell under the cell's lock, unless another
    process holds the lock or has finished them meanwhile; a corrupt checkpoint is reported and skipped."""
    with store.claim(path) as mine:
        if not mine:
            outcome.busy += 1  # another analysis process is measuring it
            return
        names = pending_metrics(path, checkpoint_sha256, inputs.recipes,
                                engine.applicable(registry.select(inputs.plan.analysis.metrics), inputs.transfer,
                                                  inputs.plan.analysis))
        if not names:
            outcome.fresh += 1  # another process measured it between our first look and the lock
            return
        try:
            checkpoint, model = load_model(inputs.folder, iteration, inputs.device, inputs.plan.analysis.layers,
                                           inputs.plan.analysis.features_at)
        except CorruptFile as error:
            logger.error("%s; skipped", one_line(error))
            outcome.corrupt += 1
            outcome.skipped.append(one_line(error))
            return
        snapshot_path = ExperimentFolder.cell_snapshot_path(path)
        frame = store.combine(path, cell_frame(inputs, checkpoint, model, checkpoint_sha256, names, snapshot_path),
                              checkpoint_sha256)
        frame["transfer_task"] = inputs.transfer_task  # which task transfer_accuracy read, or why there is none
        store.write_frame(path, frame)
        outcome.measured += 1
        logger.info("%s iteration %d measured", inputs.settings.run_id, checkpoint["iteration"])


def analyse_run(settings: Settings, experiment_dir: Path, plan: Plan, device, no_transfer: dict[str, str]) -> Outcome:
    """Measure the selected metrics of every checkpoint of one run that lacks them (RunFolderError when
    a side file of the run is unusable). `no_transfer`: {dataset: why it has no transfer task}, learnt
    in this call: the other runs of that dataset need not load their data again to learn it."""
    experiment = ExperimentFolder(experiment_dir)
    entries = experiment.run(settings.run_id).checkpoint_entries()
    names = [name for name in registry.select(plan.analysis.metrics)
             if settings.dataset not in no_transfer or name in engine.applicable([name], None)]
    names = engine.without_snapshots(names, plan.analysis)
    current = recipes(plan)
    pending = {iteration: entry for iteration, entry in entries.items()
               if pending_metrics(experiment.cell_path(settings.run_id, iteration), entry["sha256"], current, names)}
    outcome = Outcome(fresh=len(entries) - len(pending))
    if pending:
        inputs = run_inputs(settings, experiment.run(settings.run_id), plan, device)
        if inputs.transfer is None:
            no_transfer[settings.dataset] = inputs.transfer_task
        measure_cells(inputs, experiment, pending, outcome)
    if settings.dataset in no_transfer:  # say why in every cell, measured now or before
        for iteration in entries:
            store.note(experiment.cell_path(settings.run_id, iteration), "transfer_task", no_transfer[settings.dataset])
    return outcome


def measure_cells(inputs: RunInputs, experiment: ExperimentFolder, pending: dict, outcome: Outcome) -> None:
    run_id = inputs.settings.run_id
    bar = progress_bar(inputs.plan.execution.progress, len(pending), 0, f"measuring {run_id}", unit="checkpoint")
    try:
        for iteration, entry in sorted(pending.items()):
            if bar is not None:
                bar.update(1)
            measure_cell(inputs, iteration, entry["sha256"], experiment.cell_path(run_id, iteration), outcome)
    finally:
        if bar is not None:
            bar.close()


def analyse_runs(runs: list[Settings], experiment_dir: Path, plan: Plan, device) -> Outcome:
    """Every run in turn; one whose folder has an unusable file is reported and skipped, the others go on."""
    total, no_transfer = Outcome(), {}
    for settings in runs:
        try:
            total.add(analyse_run(settings, experiment_dir, plan, device, no_transfer))
        except (RunFolderError, data.DataError) as error:  # a damaged side file, or this run's dataset missing
            logger.error("%s; run %s skipped", one_line(error), settings.run_id)
            total.skipped.append(f"{settings.run_id}: {one_line(error)}")
    return total


def analyse_job(settings_record: dict, experiment_dir: str, plan: Plan) -> Outcome:
    """One Slurm array task: one run's missing cells, then that run's part of the table only (each
    task writes its own part, so no task's cost grows with the grid)."""
    setup_logging(plan.execution.log_level)
    apply_threads(plan.execution)
    device = resolve_device(plan.execution)
    settings = Settings.from_record(settings_record)
    outcome = analyse_runs([settings], Path(experiment_dir), plan, device)
    store.update_run(Path(experiment_dir), settings.run_id, recipes(plan))
    snapshots.update_similarity(Path(experiment_dir), recipes(plan)[snapshots.SNAPSHOT_METRIC], [settings.run_id])
    return outcome


def submit_analysis(plan: Plan, experiment_dir: Path, runs: list[Settings]) -> int:
    """`launcher=slurm`: one array task per run, with the cluster options of train.sh."""
    from slurm.launch import absolute_execution, make_executor

    if not runs:
        print(f"submitted 0 jobs: experiment {plan.experiment!r} has no runs under {ExperimentFolder(experiment_dir).runs_path}")
        return 0
    plan = dataclasses.replace(plan, execution=Execution(**absolute_execution(plan)))
    executor = make_executor(plan, experiment_dir)
    executor.update_parameters(job_name=f"analysis-{plan.experiment}")
    jobs = executor.map_array(analyse_job, [settings.to_record() for settings in runs],
                              [str(experiment_dir.resolve())] * len(runs), [plan] * len(runs))
    print(f"submitted {len(jobs)} analysis job(s) (array {jobs[0].job_id.split('_')[0]}); logs in "
          f"{ExperimentFolder(experiment_dir).slurm_path}; the table: {ExperimentFolder(experiment_dir).table_path}")
    return 0


def report_skipped(skipped: list[str]) -> int:
    """The list of what was skipped, at the end where it is seen; 1 when anything was."""
    if not skipped:
        return 0
    print(f"error: {len(skipped)} file(s) skipped (the rest was measured); fix or remove them, then run the same "
          "command:", file=sys.stderr)
    for line in skipped:
        print(f"  {line}", file=sys.stderr)
    return 1


def measure_experiment(plan: Plan, experiment: ExperimentFolder, publish) -> int:
    """Measure the chosen runs' missing cells, bring the table's parts up to date, draw; 1 when a file was skipped."""
    registry.select(plan.analysis.metrics)  # an unknown metric name is refused before anything is written
    runs, skipped = runs_of(experiment, plan.overrides)
    if plan.cluster.launcher == "slurm":
        from slurm.capacity import check_capacity

        check_capacity(plan.cluster)  # a job no node can run is refused before anything is written
        # the other runs' parts here (other recipe, gone runs, an old one-file table); each task writes its own
        store.merge(experiment.path, recipes(plan), leave={settings.run_id for settings in runs})
        return max(submit_analysis(plan, experiment.path, runs), report_skipped(skipped))
    device = resolve_device(plan.execution)
    for folder in (experiment.path, experiment.metrics_path):  # read-only or full: say so before any work
        ensure_writable_folder(folder)
    outcome = analyse_runs(runs, experiment.path, plan, device)
    outcome.skipped[:0] = skipped
    if not runs:  # every run's settings are unusable: keep the table and the report as they are
        return report_skipped(outcome.skipped)
    merged = store.merge(experiment.path, recipes(plan))  # rows fresh under their metric's recipe only
    similar = snapshots.update_similarity(experiment.path, recipes(plan)[snapshots.SNAPSHOT_METRIC])
    summary = (f"{len(runs)} run(s): {outcome.measured} checkpoint(s) measured, {outcome.fresh} already fresh, "
               f"{outcome.busy} left to another process, {outcome.corrupt} corrupt. {merged.rows} rows in "
               f"{experiment.table_path} ({len(merged.written)} run part(s) rewritten), {similar} in "
               f"{experiment.similarity_path}")
    if not (merged.rows and plan.analysis.figures):
        print(summary)
        return report_skipped(outcome.skipped)
    if outcome.measured or merged.written or outcome.busy:
        print(summary)
        summary = ""
    else:  # nothing measured: one line if nothing is to be drawn either
        summary = f"{len(runs)} run(s), {outcome.fresh} checkpoint(s) measured before"
    drawn = publish.publish(plan, experiment.path, measured_note=summary)
    return max(drawn, report_skipped(outcome.skipped))


def show_help() -> int:
    from conf.cli import ANALYSIS_FIELDS
    from conf.global_settings import describe_accepted, show_default

    print(__doc__.strip(), "\nanalysis options (the recipe; run settings filter the runs; launch options as train.py):")
    for name, item in ANALYSIS_FIELDS.items():
        print(f"  {name + '=' + show_default(item):<34} {item.metadata['doc']} (accepted: {describe_accepted(item)})")
    return 0


def run_command(arguments: list[str]) -> int:
    if arguments and arguments[0] == "features":
        from metrics.export import features_command

        return features_command(arguments[1:])
    if arguments and arguments[0] == "import":
        from metrics.imported import import_command

        return import_command(arguments[1:])
    if arguments and arguments[0] == "similarity":
        from metrics.compare import similarity_command

        return similarity_command(arguments[1:])
    only_figures = bool(arguments) and arguments[0] == "figures"
    from figures import publish  # here: matplotlib and seaborn load only for drawing

    plan = parse_arguments(arguments[1:] if only_figures else arguments, analysis=True)
    setup_logging(plan.execution.log_level)
    apply_threads(plan.execution)
    experiment = ExperimentFolder.of(plan.execution.out_dir, plan.experiment)
    if only_figures:
        return publish.publish(plan, experiment.path)
    return measure_experiment(plan, experiment, publish)


def main(arguments: list[str]) -> int:
    """Exit codes: 0 done, 1 a file was skipped or the environment failed (a read-only or full
    folder), 2 bad input (nothing written)."""
    if any(argument in ("-h", "--help", "help") for argument in arguments):
        return show_help()
    try:
        return run_command(arguments)
    except (SettingsError, data.DataError, RunFolderError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # the environment: a full disk, a read-only or misnamed folder
        print(f"error: {describe_environment_error(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
