"""python analysis.py figures experiment=NAME — figures, phases.csv, findings.csv and report.html from metrics.parquet alone.

Called by analysis.py after measuring (unless figures=false), and by its `figures` command.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from conf import DEFAULT_EXPERIMENT, EXPERIMENTS, Experiment, Plan, SettingsError
from conf.analysis import asks_defaults
from conf.cli import describe_filter
from findings.table import describe_question, question_rows, read_parquet_again_if_changed
from conf.global_settings import SETTING_FIELDS, UNKNOWN
from conf.plasticity import with_parents
from folders import ExperimentFolder, RunRecord
from utils import atomic_write_text, exclusive_lock

logger = logging.getLogger(__name__)


def run_table(runs: dict[str, RunRecord]) -> pd.DataFrame:
    """Every run folder of the experiment (`runs`: as this call read them, ExperimentFolder.read_runs): id, kind,
    state, iteration/total, parent, why it stopped (status.json's reason: a failure, a divergence, a signal) and its
    settings. A run whose settings file is unusable is a row of state "skipped" with the error as its reason and no
    settings (logged): the others are still reported. A training setting an imported run was not told is `unknown`
    (a value of its own: never equal to a number); a model size its arch does not take (a torchvision builder's
    depth) is left empty; imported_from is `imported` (its files' hash, in its run id, tells two imports apart as a
    seed does)."""
    rows = []
    for run in runs.values():
        settings, status = run.settings, run.status
        if settings is None:
            logger.warning("%s; left out of the figures", run.problem)
            rows.append({"run_id": run.run_id, "kind": "", "state": "skipped", "iteration": "",
                         "parent": "", "reason": f"settings unusable: {run.problem}"})
            continue
        rows.append({"run_id": settings.run_id, "kind": run.kind, "state": status.get("state", "new"),
                     "iteration": f"{status.get('iteration', 0)}/{status.get('total_iterations', '?')}",
                     "parent": run.parent_id,
                     "reason": str(status.get("reason", "")),
                     **{key: json.dumps(value) if isinstance(value, list) else value
                        for key, value in settings.to_record().items()}, **dict.fromkeys(settings.unknown(), UNKNOWN),
                     "imported_from": "imported" if settings.imported_from else ""})  # its files' hash: no condition
    return pd.DataFrame(rows)


RUN_COLUMNS = ("run_id", "kind", "state", "iteration", "parent", "reason")  # the run table's columns beside settings


def varying_keys(runs: pd.DataFrame) -> list[str]:
    """The settings that take more than one value across the runs (a skipped run's missing ones aside, and a size
    an arch does not take; `unknown` is a value: lr 0.02 and unknown vary, two unknowns do not)."""
    return [key for key in runs.columns if key not in RUN_COLUMNS and runs[key].dropna().astype(str).nunique() > 1]


def expected_run_ids(experiment: str | Experiment) -> set[str]:
    """The run ids a preset's own grids make (a preset's name, or the preset itself: a preset file's), their
    earlier stages included; {} for a name of one's own (no preset), or when they cannot be built here (a
    setting this machine refuses: the header then describes the runs instead)."""
    from conf.cli import expand_grid, experiment_sweeps

    preset = EXPERIMENTS.get(experiment) if isinstance(experiment, str) else experiment
    if preset is None:
        return set()
    try:
        grid = [settings for sweeps in experiment_sweeps(preset, {}) for settings in expand_grid(sweeps)]
    except SettingsError:
        return set()
    return {settings.run_id for settings in with_parents(tuple(grid))}  # a warm start's earlier stages beside it


def describe_values(name: str, values: list) -> str:
    """`seeds 0–2` for a run of consecutive integers, `seeds 0, 3` otherwise, `seed 0` for one; `unknown` (a
    training setting imported runs were not told) after the numbers, as a value of its own: `lrs 0.1, unknown`."""
    numbers = sorted(int(value) if float(value).is_integer() else value  # 0.0 of a column with gaps
                     for value in values if value != UNKNOWN)
    values = numbers + [UNKNOWN] * (len(numbers) < len(values))
    if len(values) == 1:
        return f"{name} {values[0]}"
    consecutive = all(isinstance(value, int) for value in values) and values == list(range(values[0], values[-1] + 1))
    shown = f"{values[0]}–{values[-1]}" if consecutive and len(values) > 2 else ", ".join(map(str, values))
    return f"{name}s {shown}"


def describe_grid(experiment: str | Experiment | None, runs: pd.DataFrame) -> str:
    """The report's header line: what ran. A preset's description (`experiment`: a preset's name, or the preset
    itself: a preset file's) when its runs are the preset's own (all of them, or some while the grid is still
    being trained); otherwise the grid the runs form, from the settings that vary: "a grid of 4 runs over depth,
    label_noise (seeds 0–2)" (a command line that swept keys writes its runs into the experiment it names:
    `default` unless told; a name of one's own has no preset)."""
    runs = runs[runs["state"] != "skipped"] if len(runs) else runs
    ids = set(runs["run_id"]) if len(runs) else set()
    experiment = EXPERIMENTS.get(experiment) if isinstance(experiment, str) else experiment
    if experiment is not None and ids and ids <= expected_run_ids(experiment):
        swept = swept_words(runs)  # what these runs vary, not what the experiment plans
        return f"{experiment.description} Swept here: {swept}." if swept else experiment.description
    if not ids:
        return experiment.description if experiment is not None else ""
    keys = [key for key in varying_keys(runs) if key != "seed"]
    seeds = describe_values("seed", list(runs["seed"].dropna().unique())) if "seed" in runs else ""
    if len(runs) == 1:
        differ = describe_differences(runs.iloc[0])
        text = f"one run ({differ})" if differ else "one run of the defaults"
    else:
        text = f"a grid of {len(runs)} runs over {', '.join(keys) or 'seed'}" + (f" ({seeds})" if seeds else "")
    if experiment is not None and experiment.name != DEFAULT_EXPERIMENT:
        text += f"; not the grid of experiment {experiment.name} ({experiment.description})"
    return text


def swept_words(runs: pd.DataFrame) -> str:
    """`depth (2, 4), label_noise (0.0, 0.2), seed (0, 1)`: every setting that takes more than one value among the
    runs, with its values (a key the experiment names but these runs hold fixed is not listed)."""
    from findings.conditions import record_value

    keys = varying_keys(runs)  # whole numbers as such: depth 2, not the 2.0 of a column with gaps
    words = [f"{key} ({', '.join(sorted({str(record_value(key, value)) for value in runs[key].dropna()}))})"
             for key in keys]
    return ", ".join(words)


def describe_differences(run: pd.Series) -> str:
    """The settings of one run that differ from the defaults: `depth=2, width=8`; of an imported run, `imported`
    and the training settings it was not told, `depth=2, imported; lr, epochs unknown` (never their defaults); a
    size its arch does not take is left out."""
    from findings.conditions import missing

    defaults = {name: item.default for name, item in SETTING_FIELDS.items()}
    unknown = [key for key in defaults if key in run and run[key] == UNKNOWN]
    changed = [("imported" if key == "imported_from" else f"{key}={run[key]}") for key, default in defaults.items()
               if key in run and key not in unknown and not missing(run[key])
               and not same_value(json.dumps(list(default)) if isinstance(default, tuple) else default, run[key])]
    return "; ".join(part for part in (", ".join(changed), ", ".join(unknown) + " unknown" if unknown else "") if part)


def same_value(first, second) -> bool:
    """Equal as numbers where both are (4 and 4.0: a column with gaps is float), else as text."""
    try:
        return float(first) == float(second)
    except (TypeError, ValueError):
        return str(first) == str(second)


def rows_to_draw(experiment: ExperimentFolder, plan: Plan) -> pd.DataFrame:
    """The table's rows of the runs the command line's run settings choose; SettingsError (one line,
    nothing drawn, the report and phases.csv left as they are) when there are none to draw."""
    from pyarrow import ArrowException

    path = experiment.table_path
    measure = f"run `python analysis.py experiment={plan.experiment_argument()} ...` first (it measures the checkpoints)"
    try:
        metrics = read_parquet_again_if_changed(path)
    except FileNotFoundError:  # other OSErrors (a file in the way, no permission) are the environment's: exit 1
        raise SettingsError(f"{path} does not exist; {measure}") from None
    except ArrowException as error:
        raise SettingsError(f"{path} is not a readable table ({error}); {measure} (it rebuilds the table)") from None
    if not len(metrics):
        raise SettingsError(f"{path} has no rows: no checkpoint is measured yet; {measure}")
    metrics = question_rows(metrics, plan.analysis)
    if not len(metrics):
        raise SettingsError(f"{path} has no rows measured under {describe_question(plan.analysis)}; {measure}")
    every = metrics
    for key, values in plan.overrides:  # the same filter as for measuring
        metrics = metrics[metrics[key].isin(values)]
    metrics = with_ancestors(metrics, every)
    if plan.overrides and not len(metrics):
        raise SettingsError(f"no row of {path} matches {describe_filter(plan.overrides)}; nothing was drawn")
    return metrics


def with_ancestors(chosen: pd.DataFrame, every: pd.DataFrame) -> pd.DataFrame:
    """`chosen` and the rows of every earlier stage or parent its runs started from: the words that trained a
    child (dataset=fashionmnist pretrain_dataset=mnist) trained its parent too, and a child's story is read
    against its parent's phases."""
    if len(chosen) == len(every):
        return chosen
    runs = set(chosen["run_id"])
    while True:
        parents = set(every.loc[every["run_id"].isin(runs), "parent_run_id"].dropna()) - runs - {""}
        if not parents:
            return every[every["run_id"].isin(runs)]
        runs |= parents


def read_similarity(experiment: ExperimentFolder, plan: Plan) -> pd.DataFrame | None:
    """similarity.parquet's rows of the runs the command line chooses; None when it is missing or unreadable
    (its figures are then skipped, with the reason; the others are drawn)."""
    from pyarrow import ArrowException

    try:
        similarity = read_parquet_again_if_changed(experiment.similarity_path)
    except (FileNotFoundError, ArrowException, ValueError) as error:
        logger.info("no similarity table (%s)", type(error).__name__)
        return None
    similarity = question_rows(similarity, plan.analysis)
    for key, values in plan.overrides:
        similarity = similarity[similarity[key].isin(values)]
    return similarity


def publish(plan: Plan, experiment: ExperimentFolder, runs: dict[str, RunRecord], measured_note: str = "") -> int:
    """Figures, phases.csv, findings.csv and report.html from metrics.parquet only; prints what was drawn or skipped.
    Draws only the figures whose inputs changed since the last call or whose files no longer hold what was
    drawn, rewrites a report or phases.csv that differs from what was written (figures/published.py), and removes
    every figure file the report no longer shows; with nothing new at all, writes nothing and says so in
    one line (after `measured_note`, what the measuring found: nothing to measure)."""
    # one publication at a time: one that started before another's table change finished would record
    # that change's stamps beside figures drawn without it
    with exclusive_lock(experiment.publication_lock_path, wait=True):
        return publish_locked(plan, experiment, run_table(runs), measured_note)


def publish_locked(plan: Plan, experiment: ExperimentFolder, runs: pd.DataFrame, measured_note: str) -> int:
    from figures import published

    description = describe_grid(plan.preset or plan.experiment, runs)
    question = f"{describe_filter(plan.overrides)} under {describe_question(plan.analysis)}"  # what is drawn
    inputs = published.Inputs.of(experiment, question, description, runs,
                                 formats=tuple(plan.analysis.figure_formats.split(",")))
    current = inputs.unchanged(experiment)
    if current is not None:
        drawn = sum(name.endswith(".png") for entry in current["figures"].values() for name in entry.get("files", []))
        print(f"nothing new: {measured_note + '; ' if measured_note else ''}the table, {drawn} figure(s), "
              f"{experiment.phases_path.name}, {experiment.findings_path.name} and the report are up to date ({experiment.report_path})")
        return current.get("exit", 0)
    if measured_note:
        print(measured_note)
    return draw_and_report(plan, experiment, runs, description, inputs, published.read_record(experiment))


def draw_and_report(plan: Plan, experiment: ExperimentFolder, runs: pd.DataFrame, description: str, inputs,
                    record: dict) -> int:
    from figures import published
    from figures.report import TROUBLED_STATES, eval_mode_lags, transfer_tasks, troubled_runs, write_report  # seaborn
    from findings.readout import readout

    metrics = rows_to_draw(experiment, plan)
    found = readout(metrics)  # one read-out: the figures, phases.csv, findings.csv and the report all show it
    drawn, skipped, entries = redraw(experiment, plan, metrics, inputs, record.get("figures", {}), found)
    atomic_write_text(experiment.phases_path, found.phases.to_csv(index=False))
    atomic_write_text(experiment.findings_path, found.table.to_csv(index=False))
    # still training or stopped part way: drawn as far as measured (failed, diverged, skipped: the Findings say why)
    unfinished = runs[~runs["state"].isin(("done", *TROUBLED_STATES))] if len(runs) else runs
    notes = [f"{len(unfinished)} run(s) not done ({', '.join(sorted(set(unfinished['state'])))}): drawn up to their "
             "newest measured checkpoint"] if len(unfinished) else []
    if plan.overrides:
        notes.append(f"Figures and tables of the runs with {describe_filter(plan.overrides)} (the command line's filter).")
    if not asks_defaults(plan.analysis):
        notes.append(f"Figures and tables of the rows measured under {describe_question(plan.analysis)} (the command "
                     f"line's analysis options); python analysis.py figures experiment={plan.experiment_argument()} "
                     "draws those of the default options, which are kept beside them.")
    troubled = troubled_runs(runs, set(metrics["run_id"]), describe_filter(plan.overrides))
    report = write_report(experiment, f"Experiment {plan.experiment}", description, runs, drawn, skipped,
                          found, notes, troubled=troubled,
                          unfinished=set(unfinished["run_id"]) if len(unfinished) else set(),
                          lagging=eval_mode_lags(metrics), tasks=transfer_tasks(metrics))
    code = 1 if any(reason.startswith("failed:") for reason in skipped.values()) else 0
    published.write_record(experiment, {"built_from": inputs.report_key(), "exit": code, "figures": entries,
                                        "outputs": published.output_digests(experiment)})
    for note in notes:
        print(note)
    redrawn = [name for name in drawn if entries[name].get("redrawn")]
    print(f"figures: {sum(path.suffix == '.png' for paths in drawn.values() for path in paths)} ({', '.join(drawn) or 'none'}) in "
          f"{experiment.figures_path}; {len(redrawn)} redrawn ({', '.join(redrawn) or 'none'}), the others unchanged")
    for name, reason in skipped.items():
        print(f"  not drawn: {name}: {reason}")
    print(f"report: {report}")
    return code


def redraw(experiment: ExperimentFolder, plan: Plan, metrics: pd.DataFrame, inputs, previous: dict, found=None):
    """Draw the figures whose key (their table, the filter, the code) changed or whose files no longer hold
    what was drawn (gone, emptied, edited: their size and sha256 are recorded), keep the others as drawn
    before, and remove every figure file that none of them makes now (a figure that skips now, a run
    filtered out, a figure renamed: remove_unlisted_figures); `found`: the table's read-out. Returns ({name: [paths]}, {name: why not
    drawn}, the record's entries), in the registry's order."""
    import figures
    from figures import published

    folder = experiment.figures_path
    keys = {name: inputs.figure_key(spec.table) for name, spec in figures.FIGURES.items()}

    def kept(name):
        entry = previous.get(name, {})
        return entry.get("key") == keys[name] and published.figure_intact(folder, entry) and inputs.in_formats(entry)

    stale = [name for name in keys if not kept(name)]
    similarity = read_similarity(experiment, plan) if any(figures.FIGURES[name].table == "similarity"
                                                           for name in stale) else None
    fresh_drawn, fresh_skipped = figures.draw_all(metrics, folder, stale, similarity_table=similarity, readout=found,
                                                  workers=figure_workers(plan), formats=inputs.formats)
    drawn, skipped, entries = {}, {}, {}
    for name in keys:
        if name in stale:
            files = [path.name for path in fresh_drawn.get(name, [])]
            failed = fresh_skipped.get(name, "").startswith("failed:")
            entries[name] = {"key": None if failed else keys[name], "files": files, "redrawn": True,
                             "contents": {file: published.file_digest(folder / file) for file in files},
                             **({"skipped": fresh_skipped[name]} if name in fresh_skipped else {})}
        else:
            entries[name] = {**previous[name], "redrawn": False}
        if entries[name]["files"]:
            drawn[name] = [folder / file for file in entries[name]["files"]]
        if "skipped" in entries[name]:
            skipped[name] = entries[name]["skipped"]
    remove_unlisted_figures(folder, entries)
    return drawn, skipped, entries


def figure_workers(plan: Plan) -> int:
    """Processes that draw the figures: the cores this process may use, at most `threads=` when set (a
    cluster job's share of its node)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = getattr(plan.execution, "threads", 0) or cores
    return max(1, min(cores, threads))


def remove_unlisted_figures(folder: Path, entries: dict) -> list[str]:
    """Remove every figure file (PNG, PDF) of the figures folder that no entry of this publication lists, so
    the folder holds exactly what the report shows. Removing only the files the previous record listed for a
    redrawn figure would miss those of a figure renamed or no longer registered (the record's entry is never
    visited), those of a publication whose record is gone or unreadable (deleted, or a crash between drawing
    and recording) and a half-saved figure's. Returns the names removed (logged)."""
    listed = {file for entry in entries.values() for file in entry.get("files", [])}
    removed = sorted(path.name for path in folder.glob("*") if path.suffix in (".png", ".pdf") and path.is_file()
                     and path.name not in listed)
    for name in removed:
        (folder / name).unlink(missing_ok=True)
    if removed:
        logger.info("removed %d figure file(s) no longer drawn: %s", len(removed), ", ".join(removed))
    return removed
