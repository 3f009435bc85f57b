"""python analysis.py figures experiment=NAME — figures, phases.csv and report.html from metrics.parquet alone.

Called by analysis.py after measuring (unless figures=false), and by its `figures` command.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from checkpointing import ExperimentFolder, RunFolderError
from conf import EXPERIMENTS, Plan, SettingsError
from conf.plasticity import has_parent, parent_settings, run_kind
from utils import atomic_write_text, exclusive_lock

logger = logging.getLogger(__name__)


def describe_filter(overrides: tuple) -> str:
    """The run settings typed on the command line, as typed: `depth=3,5 seed=0`."""
    return " ".join(f"{key}={','.join(map(str, values))}" for key, values in overrides)


def run_table(experiment_dir: Path) -> pd.DataFrame:
    """Every run folder of the experiment: id, kind, state, iteration/total, parent, and its settings.
    A run whose settings file is unusable is left out (logged): the others are still reported."""
    rows = []
    for folder in ExperimentFolder(experiment_dir).run_folders():
        try:
            settings = folder.read_settings()
        except RunFolderError as error:
            logger.warning("%s; left out of the report", error)
            continue
        status = folder.read_status()
        kind = run_kind(settings)
        rows.append({"run_id": settings.run_id, "kind": kind, "state": status.get("state", "new"),
                     "iteration": f"{status.get('iteration', 0)}/{status.get('total_iterations', '?')}",
                     "parent": parent_settings(settings).run_id if has_parent(settings) else "",
                     **{key: json.dumps(value) if isinstance(value, list) else value
                        for key, value in settings.to_record().items()}})
    return pd.DataFrame(rows)


def read_parquet_again_if_changed(path: Path) -> pd.DataFrame:
    """The table (a folder of per-run parts) as one frame. A part removed by an
    analysis between the listing and the reading is a FileNotFoundError: read the folder once more."""
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        if not path.exists():
            raise
        return pd.read_parquet(path)


def read_table(experiment: ExperimentFolder, plan: Plan) -> pd.DataFrame:
    """The table's rows of the runs the command line's run settings choose; SettingsError (one line,
    nothing drawn, the report and phases.csv left as they are) when there are none to draw."""
    from pyarrow import ArrowException

    path = experiment.table_path
    measure = f"run `python analysis.py experiment={plan.experiment} ...` first (it measures the checkpoints)"
    try:
        metrics = read_parquet_again_if_changed(path)
    except FileNotFoundError:  # other OSErrors (a file in the way, no permission) are the environment's: exit 1
        raise SettingsError(f"{path} does not exist; {measure}") from None
    except ArrowException as error:
        raise SettingsError(f"{path} is not a readable table ({error}); {measure} (it rebuilds the table)") from None
    if not len(metrics):
        raise SettingsError(f"{path} has no rows: no checkpoint is measured yet; {measure}")
    for key, values in plan.overrides:  # the same filter as for measuring
        metrics = metrics[metrics[key].isin(values)] if key in metrics else metrics
    if plan.overrides and not len(metrics):
        raise SettingsError(f"no row of {path} matches {describe_filter(plan.overrides)}; nothing was drawn")
    return metrics


def read_similarity(experiment: ExperimentFolder, plan: Plan) -> pd.DataFrame | None:
    """similarity.parquet's rows of the runs the command line chooses; None when it is missing or unreadable
    (its figures are then skipped, with the reason; the others are drawn)."""
    from pyarrow import ArrowException

    try:
        similarity = read_parquet_again_if_changed(experiment.similarity_path)
    except (FileNotFoundError, ArrowException, ValueError) as error:
        logger.info("no similarity table (%s)", type(error).__name__)
        return None
    for key, values in plan.overrides:
        similarity = similarity[similarity[key].isin(values)] if key in similarity else similarity
    return similarity


def publish(plan: Plan, experiment_dir: Path, measured_note: str = "") -> int:
    """Figures, phases.csv and report.html from metrics.parquet only; prints what was drawn or skipped.
    Draws only the figures whose inputs changed since the last call (figures/published.py) and removes
    the files a redrawn figure no longer makes; with nothing new at all, writes nothing and says so in
    one line (after `measured_note`, what the measuring found: nothing to measure)."""
    experiment = ExperimentFolder(experiment_dir)
    # one publication at a time: one that started before another's table change finished would record
    # that change's stamps beside figures drawn without it
    with exclusive_lock(experiment.publication_lock_path, wait=True):
        return publish_locked(plan, experiment, measured_note)


def publish_locked(plan: Plan, experiment: ExperimentFolder, measured_note: str) -> int:
    from figures import published

    experiment_dir = experiment.path
    runs = run_table(experiment_dir)
    description = EXPERIMENTS[plan.experiment].description if plan.experiment in EXPERIMENTS else ""
    inputs = published.Inputs.of(experiment, describe_filter(plan.overrides), description, runs)
    record = published.read_record(experiment)
    if inputs.unchanged(record, experiment):
        drawn = sum(len(entry.get("files", [])) // 2 for entry in record["figures"].values())  # PNG + PDF each
        print(f"nothing new: {measured_note + '; ' if measured_note else ''}the table, {drawn} figure(s), "
              f"{experiment.phases_path.name} and the report are up to date ({experiment.report_path})")
        return record.get("exit", 0)
    if measured_note:
        print(measured_note)
    return draw_and_report(plan, experiment, runs, description, inputs, record)


def draw_and_report(plan: Plan, experiment: ExperimentFolder, runs: pd.DataFrame, description: str, inputs,
                    record: dict) -> int:
    from figures import published
    from figures.phases import phase_table, stop_table
    from figures.report import write_report  # imports seaborn: only when drawing
    from figures.transfer import transfer_summary

    metrics = read_table(experiment, plan)
    drawn, skipped, entries = redraw(experiment, plan, metrics, inputs, record.get("figures", {}))
    phases = phase_table(metrics)
    advice = stop_table(phases)
    atomic_write_text(experiment.phases_path, phases.to_csv(index=False))
    unfinished = runs[runs["state"] != "done"] if len(runs) else runs
    notes = [f"{len(unfinished)} run(s) not done ({', '.join(sorted(set(unfinished['state'])))}): drawn up to their "
             "newest measured checkpoint"] if len(unfinished) else []
    report = write_report(experiment.path, f"Experiment {plan.experiment}", description, runs, drawn, skipped,
                          phases, advice, notes, transfer_summary(metrics))
    code = 1 if any(reason.startswith("failed:") for reason in skipped.values()) else 0
    published.write_record(experiment, {"report": inputs.report_key(), "exit": code, "figures": entries})
    for note in notes:
        print(note)
    redrawn = [name for name in drawn if entries[name].get("redrawn")]
    print(f"figures: {sum(len(paths) // 2 for paths in drawn.values())} ({', '.join(drawn) or 'none'}) in "
          f"{experiment.figures_path}; {len(redrawn)} redrawn ({', '.join(redrawn) or 'none'}), the others unchanged")
    for name, reason in skipped.items():
        print(f"  not drawn: {name}: {reason}")
    print(f"report: {report}")
    return code


def redraw(experiment: ExperimentFolder, plan: Plan, metrics: pd.DataFrame, inputs, previous: dict):
    """Draw the figures whose key (their table, the filter, the code) changed or whose files are gone, keep
    the others as drawn before, and remove the files a redrawn figure no longer makes. Returns ({name:
    [paths]}, {name: why not drawn}, the record's entries), in the registry's order."""
    import figures

    folder = experiment.figures_path
    keys = {name: inputs.figure_key(spec.table) for name, spec in figures.FIGURES.items()}

    def kept(name):
        entry = previous.get(name, {})
        return entry.get("key") == keys[name] and all((folder / file).exists() for file in entry.get("files", []))

    stale = [name for name in keys if not kept(name)]
    similarity = read_similarity(experiment, plan) if any(figures.FIGURES[name].table == "similarity"
                                                           for name in stale) else None
    fresh_drawn, fresh_skipped = figures.draw_all(metrics, folder, stale, similarity_table=similarity)
    drawn, skipped, entries = {}, {}, {}
    for name in keys:
        if name in stale:
            files = [path.name for path in fresh_drawn.get(name, [])]
            for outdated in set(previous.get(name, {}).get("files", [])) - set(files):
                (folder / outdated).unlink(missing_ok=True)
            failed = fresh_skipped.get(name, "").startswith("failed:")
            entries[name] = {"key": None if failed else keys[name], "files": files, "redrawn": True,
                             **({"skipped": fresh_skipped[name]} if name in fresh_skipped else {})}
        else:
            entries[name] = {**previous[name], "redrawn": False}
        if entries[name]["files"]:
            drawn[name] = [folder / file for file in entries[name]["files"]]
        if "skipped" in entries[name]:
            skipped[name] = entries[name]["skipped"]
    return drawn, skipped, entries
