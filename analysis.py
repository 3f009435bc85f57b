"""python analysis.py [experiment=NAME] [key=value ...] — per-layer metrics of every checkpoint not yet measured, then every figure and the report.

Measures the runs in `<out_dir>/<experiment>/runs/` (run settings on the command line filter them:
`depth=3,5` keeps the runs of depth 3 or 5). Writes
`<out_dir>/<experiment>/metrics/<run_id>/iteration_*.parquet` (one file per checkpoint) and
merges them into `<out_dir>/<experiment>/metrics.parquet`: one row per (run_id, iteration, layer,
metric, split) with `value`, the layer's index, the epoch, the stage (warm starts: 1 = on the subset,
2 = on all data), the parent run of a warm-started run, and the run's settings as columns. A stage-1
run's train split is its subset.
Incremental: a checkpoint already measured under the same recipe is not measured again; runs still
training are measured up to their newest checkpoint.

Then draws every figure from the table into `<out_dir>/<experiment>/figures/` (PNG and PDF;
figures/) and writes `<out_dir>/<experiment>/report.html` (settings that vary, runs and their state,
figures, the learning-phase table) and `phases.csv`.

    python analysis.py figures experiment=learnphase
        redraw the figures and the report from the table only (no model is run)
    python analysis.py experiment=demo launcher=slurm
        the metrics, one Slurm array task per run (cluster options as for sh train.sh); then `figures`
    python analysis.py features RUN_DIR iteration=256 split=test out=feats.npz
        every layer's features (as the metrics see them) and the labels of one split, for one's own analyses
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import data
import models
from checkpointing import CorruptFile, ExperimentFolder, RunFolder
from conf import Execution, Plan, Settings, SettingsError, parse_arguments
from metrics import engine, registry, store
from utils import atomic_write_bytes, progress_bar, setup_logging

logger = logging.getLogger("analysis")
ENGINE_VERSION = 1  # bump when the engine's shared statistics change (held-out draw, pooling, ...)


def recipe(plan: Plan) -> str:
    """Hash of what decides the numbers besides the checkpoint: every metric's version, the engine's,
    and the analysis options. A cell computed under another recipe is stale."""
    options = {key: value for key, value in dataclasses.asdict(plan.analysis).items() if key != "figures"}
    text = json.dumps({"engine": ENGINE_VERSION, "metrics": registry.versions(), **options}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def splits_of(settings: Settings, folder: RunFolder, data_root: Path, download: bool, device):
    """(train, test, num_classes): the training split as the run trained on it — its labels (after
    label noise) and, for a stage-1 run of a warm start, only its subset."""
    dataset = data.load_dataset(settings, data_root=data_root, download=download).to(device)
    images, labels = dataset.train_images, dataset.train_labels.clone()
    noise = folder.read_label_noise()
    if noise is not None:  # the run's own record of which labels it trained with (IntermediateNC's noisy runs)
        labels[torch.tensor(noise["indices"], dtype=torch.long, device=device)] = torch.tensor(noise["noisy"], device=device)
    subset = folder.read_subset()
    if subset is not None:  # the run's own record of stage 1's examples (Berariu et al. 2021)
        chosen = torch.tensor(subset["indices"], dtype=torch.long, device=device)
        images, labels = images[chosen], labels[chosen]
    train = engine.SplitData(images, labels, dataset.mean, dataset.std)
    test = engine.SplitData(dataset.test_images, dataset.test_labels, dataset.mean, dataset.std)
    return train, test, dataset.num_classes


def transfer_splits(settings: Settings, plan: Plan, reference: engine.SplitData, device):
    """The colour-dominance probe's own dataset (`transfer_dataset`), normalised as the network's
    inputs; None for the run's own images. The synthetic one is drawn with the next data seed."""
    name = plan.analysis.transfer_dataset
    if name == "own":
        return None
    source = dataclasses.replace(settings, dataset=name, train_subset=0, label_noise=0.0,
                                 data_seed=settings.data_seed + (name == "synthetic"))
    dataset = data.load_dataset(source, data_root=Path(plan.execution.data_root), download=plan.execution.download)
    if dataset.train_images.shape[1:] != reference.images.shape[1:]:
        raise SettingsError(f"transfer_dataset={name} has images of shape {tuple(dataset.train_images.shape[1:])}, the "
                            f"run's are {tuple(reference.images.shape[1:])}; accepted: own or a dataset of that shape")
    dataset = dataset.to(device)
    return (engine.SplitData(dataset.train_images, dataset.train_labels, reference.mean, reference.std),
            engine.SplitData(dataset.test_images, dataset.test_labels, reference.mean, reference.std))


def load_model(folder: RunFolder, iteration: int, device) -> tuple[dict, models.LayerwiseModel]:
    """The checkpoint (verified against its sha256) and the model it rebuilds alone."""
    checkpoint = folder.load_checkpoint(iteration, map_location=device)
    return checkpoint, models.from_checkpoint(checkpoint)


def runs_of(experiment_dir: Path, overrides: tuple) -> list[Settings]:
    """Every run folder of the experiment whose settings match the command line's run settings
    (`depth=3,5` keeps runs with depth 3 or 5); none typed: all of them."""
    chosen = []
    for folder in ExperimentFolder(experiment_dir).run_folders():
        settings = folder.read_settings()
        if all(getattr(settings, key) in values for key, values in overrides):
            chosen.append(settings)
    return chosen


def analyse_run(settings: Settings, experiment_dir: Path, plan: Plan, device) -> dict[str, int]:
    """Measure every checkpoint of one run that has no fresh cell; returns counts by outcome."""
    experiment = ExperimentFolder(experiment_dir)
    folder = experiment.run(settings.run_id)
    files = folder.read_manifest().get("files", {})
    counts = {"measured": 0, "fresh": 0, "busy": 0, "corrupt": 0}
    current_recipe = recipe(plan)
    pending = {name: entry for name, entry in files.items()
               if not store.is_fresh(experiment.cell_path(settings.run_id, entry["iteration"]),
                                     current_recipe, entry["sha256"])}
    counts["fresh"] = len(files) - len(pending)
    if not pending:
        return counts
    train, test, num_classes = splits_of(settings, folder, Path(plan.execution.data_root), plan.execution.download, device)
    transfer = transfer_splits(settings, plan, train, device)
    lineage = folder.read_lineage()
    bar = progress_bar(plan.execution.progress, len(pending), 0, f"measuring {settings.run_id}", unit="checkpoint")
    for name, entry in sorted(pending.items()):
        if bar is not None:
            bar.update(1)
        path = experiment.cell_path(settings.run_id, entry["iteration"])
        with store.claim(path) as mine:
            if not mine:
                counts["busy"] += 1  # another analysis process is measuring it
                continue
            try:
                checkpoint, model = load_model(folder, entry["iteration"], device)
            except CorruptFile as error:
                logger.error("%s; skipped", error)
                counts["corrupt"] += 1
                continue
            rows = engine.measure(model, train, test, num_classes, plan.analysis, seed=settings.seed, transfer=transfer)
            rows += engine.effective_depth_rows(rows, model.layer_names(), plan.analysis.effective_depth_epsilon)
            index = {layer: position for position, layer in enumerate(model.layer_names())}
            frame = pd.DataFrame(rows)
            frame.insert(0, "run_id", settings.run_id)
            frame.insert(1, "iteration", checkpoint["iteration"])
            frame.insert(2, "epoch", checkpoint["epoch"])
            frame.insert(3, "stage", checkpoint.get("stage", 1))
            frame.insert(4, "parent_run_id", lineage.get("parent_run_id", ""))
            frame["layer_index"] = frame["layer"].map(index).fillna(-1).astype(int)
            frame["recipe"], frame["checkpoint_sha256"] = current_recipe, entry["sha256"]
            store.write_frame(path, frame)
            counts["measured"] += 1
            logger.info("%s iteration %d measured", settings.run_id, checkpoint["iteration"])
    if bar is not None:
        bar.close()
    return counts


def analyse_job(settings_record: dict, experiment_dir: str, plan: Plan) -> dict[str, int]:
    """One Slurm array task: one run's missing cells, then the merged table (atomic; the last task to
    finish merges everything that is done)."""
    setup_logging(plan.execution.log_level)
    device = torch.device("cuda" if plan.execution.device != "cpu" and torch.cuda.is_available() else "cpu")
    counts = analyse_run(Settings.from_record(settings_record), Path(experiment_dir), plan, device)
    store.merge(Path(experiment_dir))
    return counts


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


def features_command(arguments: list[str]) -> int:
    """`features RUN_DIR iteration=N split=train|test out=FILE.npz` — labels + one array per layer."""
    if not arguments:
        raise SettingsError("features needs RUN_DIR; usage: python analysis.py features RUN_DIR iteration=N split=test out=feats.npz")
    folder = RunFolder(arguments[0])
    options = dict(argument.partition("=")[::2] for argument in arguments[1:])
    unknown = set(options) - {"iteration", "split", "out", "device", "data_root"}
    if unknown:
        raise SettingsError(f"unknown key {sorted(unknown)[0]!r}; accepted: iteration, split, out, device, data_root")
    if not folder.settings_path.exists():
        raise SettingsError(f"{folder.path} is not a run folder (it has no settings file)")
    files = folder.checkpoint_entries()
    if not options.get("iteration", "").isdigit() or int(options["iteration"]) not in files:
        raise SettingsError(f"iteration={options.get('iteration')!r} has no checkpoint; accepted: {', '.join(map(str, sorted(files)))}")
    split = options.get("split", "test")
    if split not in ("train", "test"):
        raise SettingsError(f"split={split!r} is not known; accepted: train, test")
    device = torch.device(options.get("device", "cpu"))
    settings = folder.read_settings()
    train, test, num_classes = splits_of(settings, folder, Path(options.get("data_root", "datasets")), False, device)
    chosen = train if split == "train" else test
    _, model = load_model(folder, int(options["iteration"]), device)
    arrays: dict[str, list] = {}
    with torch.no_grad():
        for _, _, images, _, _ in chosen.batches(500):
            for name, tensor in model.features(images).items():
                arrays.setdefault(name, []).append(tensor.flatten(1).float().cpu().numpy())
    buffer = io.BytesIO()
    np.savez(buffer, labels=chosen.labels.cpu().numpy(), **{name: np.concatenate(parts) for name, parts in arrays.items()})
    out = Path(options.get("out", "features.npz"))
    atomic_write_bytes(out, buffer.getvalue())
    print(f"wrote {out}: labels and {len(arrays)} layers ({', '.join(arrays)}) of the {split} split")
    return 0


def main(arguments: list[str]) -> int:
    if any(argument in ("-h", "--help", "help") for argument in arguments):
        from conf.cli import ANALYSIS_FIELDS
        from conf.global_settings import describe_accepted, show_default

        print(__doc__.strip(), "\nanalysis options (the recipe; run settings filter the runs; launch options as train.py):")
        for name, item in ANALYSIS_FIELDS.items():
            print(f"  {name + '=' + show_default(item):<34} {item.metadata['doc']} (accepted: {describe_accepted(item)})")
        return 0
    try:
        if arguments and arguments[0] == "features":
            return features_command(arguments[1:])
        only_figures = bool(arguments) and arguments[0] == "figures"
        from figures import publish  # here: matplotlib and seaborn load only for drawing
        plan = parse_arguments(arguments[1:] if only_figures else arguments, analysis=True)
        setup_logging(plan.execution.log_level)
        experiment_dir = Path(plan.execution.out_dir) / plan.experiment
        if only_figures:
            return publish.publish(plan, experiment_dir)
        device = torch.device("cuda" if plan.execution.device != "cpu" and torch.cuda.is_available() else "cpu")
        totals: dict[str, int] = {}
        runs = runs_of(experiment_dir, plan.overrides)
        if plan.cluster.launcher == "slurm":
            return submit_analysis(plan, experiment_dir, runs)
        for settings in runs:
            for outcome, count in analyse_run(settings, experiment_dir, plan, device).items():
                totals[outcome] = totals.get(outcome, 0) + count
        table = store.merge(experiment_dir)
        print(f"{len(runs)} run(s): {totals.get('measured', 0)} checkpoint(s) measured, {totals.get('fresh', 0)} "
              f"already fresh, {totals.get('busy', 0)} left to another process, {totals.get('corrupt', 0)} corrupt. "
              f"{len(table)} rows in {ExperimentFolder(experiment_dir).table_path}")
        return publish.publish(plan, experiment_dir) if len(table) and plan.analysis.figures else 0
    except (SettingsError, data.DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
