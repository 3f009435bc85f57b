"""python analysis.py [experiment=NAME|FILE.py] [key=value ...] — per-layer metrics of every checkpoint not yet measured, then every figure and the report.

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
measured up to their newest checkpoint. A transfer child (start_from_iteration other than final, or
another pretrain_dataset) is measured at its first and last checkpoints only, and for its classifier's
accuracy only: all the transfer read takes; `child_checkpoints=all` measures every metric at every one (full
curves).

Then draws every figure from the table into `<out_dir>/<experiment>/figures/` (PNG; `figure_formats=png,pdf`
adds a PDF beside each; figures/) and writes `<out_dir>/<experiment>/report.html` (settings that vary, runs and
their state, the findings table, figures), `findings.csv` and `phases.csv`.

    python analysis.py figures experiment=learnphase [figure_formats=png,pdf]
        redraw the figures and the report from the table only (no model is run, torch is not loaded); with
        png,pdf a PDF beside each PNG, for papers
    python analysis.py experiment=demo launcher=slurm
        the metrics, one Slurm array task per run (cluster options as for sh train.sh); then `figures`
    python analysis.py features RUN_DIR iteration=256 split=test out=feats.npz
        every layer's features (as the metrics see them) and the labels of one split, for one's own analyses
        (subset=probe: the probe snapshot's examples and pooled features instead)
    python analysis.py import DIR arch=... dataset=... [out_dir=...]
        checkpoints trained elsewhere (a folder of state dicts, the iteration in each file's name) become a
        run that the analysis, figures and report read as any other (measuring/imported.py)
    python analysis.py similarity RUN_DIR_A RUN_DIR_B [align=iteration|stage] [out=cka.csv]
        linear CKA of every layer of run A with the same layer of run B at matching checkpoints (from the
        probe snapshots; align=stage lines a warm-started run's stage 2 up with a run from scratch)

Exit codes: 0 done; 1 a file was skipped (a corrupt checkpoint, a run whose settings file is unusable:
each is logged by name and listed at the end, the other runs are measured and merged) or the
environment failed (a read-only or full folder, a file in the way); 2 bad input (nothing written).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from conf.cpu_waiting import wait_briefly

wait_briefly()  # before torch loads: its OpenMP runtime reads how to wait once (conf/cpu_waiting.py)
import pandas as pd  # noqa: E402

from conf import Plan, SettingsError, parse_arguments
from folders import ExperimentFolder
from utils import command_shell, set_cpu_threads, setup_logging

logger = logging.getLogger("analysis")
# The subcommands beside measuring: their word, and the function that takes the rest of the command line.
SUBCOMMANDS = {"features": "measuring.features:features_command", "import": "measuring.imported:import_command",
               "similarity": "measuring.similarity:similarity_command"}


def read_table(experiment_dir: str | Path, options: str | None = "") -> pd.DataFrame:
    """`analysis.read_table("outputs/demo")`: the experiment's metrics table as one frame, a row per (run_id,
    iteration, layer, metric, split) with its value and the run's settings as columns: the rows measured under
    the default analysis options (what the figures read). `options="layers=blocks.0,blocks.1"`: those measured
    under these options (as the command line typed them); `options=None`: every call's rows, told apart by their
    `options` column. SettingsError when it has not been measured yet, or not under these options."""
    return measured_table(ExperimentFolder(experiment_dir).table_path, options, "measure the experiment first")


def read_similarity(experiment_dir: str | Path, options: str | None = "") -> pd.DataFrame:
    """`analysis.read_similarity("outputs/demo")`: the experiment's layer-similarity table (linear CKA of the probe
    snapshots: each layer with the next one and with itself at the run's final checkpoint; measuring/snapshots.py)
    as one frame, with the runs' settings as columns; `options` as read_table's. SettingsError when it has not
    been measured yet, or not under these options."""
    return measured_table(ExperimentFolder(experiment_dir).similarity_path, options,
                          "measure the experiment with the probe snapshots first (cka_previous_layer in metrics=)")


def measured_table(path: Path, options: str | None, fix: str) -> pd.DataFrame:
    """The rows under `options` (None: all) of the table folder at `path` as one frame; SettingsError naming it
    and `fix` when it does not exist or holds no row under those options."""
    from conf.analysis import analysis_of
    from findings.table import question_rows, read_parquet_again_if_changed

    try:
        table = read_parquet_again_if_changed(path)
    except FileNotFoundError:
        raise SettingsError(f"{path} does not exist; {fix} (python analysis.py out_dir=... experiment=...)") from None
    if options is None:
        return table
    rows = question_rows(table, analysis_of(options))
    if len(table) and not len(rows):
        present = sorted(set(table["options"]))
        raise SettingsError(f"{path} has no rows measured under options={options!r}; it has rows under "
                            f"{', '.join(repr(text) for text in present)} (options=None reads them all)")
    return rows


def report_skipped(skipped: list[str]) -> int:
    """The list of what was skipped, at the end where it is seen; 1 when anything was."""
    if not skipped:
        return 0
    print(f"error: {len(skipped)} file(s) skipped (the rest was measured); fix or remove them, then run the same "
          "command:", file=sys.stderr)
    for line in skipped:
        print(f"  {line}", file=sys.stderr)
    return 1


def left_out_note(outcome) -> str:
    """", N transfer-child checkpoint(s) ... left out (...)", or "": says why fewer checkpoints were measured
    than the runs hold, so the count is not read as a failure."""
    if not outcome.left_out:
        return ""
    return (f", {outcome.left_out} transfer-child checkpoint(s) between first and last left out "
            "(child_checkpoints=ends; child_checkpoints=all measures them)")


def measure_experiment(plan: Plan, experiment: ExperimentFolder, every_run: dict, publish) -> int:
    """Measure the chosen runs' missing cells, bring the table's parts up to date, draw; 1 when a file was skipped.
    `every_run`: each run folder as this call read it, once (ExperimentFolder.read_runs)."""
    # here, not at the top: torch and the models load only to measure (`analysis.py figures` draws without them)
    from measuring.protocol import chosen_runs, measure_and_merge

    set_cpu_threads(plan.execution.threads)
    runs, skipped = chosen_runs(plan, experiment, every_run)  # bad input refused before anything is written
    if plan.cluster.launcher == "slurm":
        from slurm.analysis_job import submit_analysis

        return max(submit_analysis(plan, experiment, runs, every_run), report_skipped(skipped))
    outcome, merged, similar = measure_and_merge(runs, every_run, experiment, plan)
    outcome.skipped[:0] = skipped
    drawn = 0
    if runs:  # every run's settings unusable: the table and the report are kept as they are, nothing said
        summary = (f"{len(runs)} run(s): {outcome.measured} checkpoint(s) measured, {outcome.fresh} already fresh, "
                   f"{outcome.busy} left to another process, {outcome.corrupt} corrupt{left_out_note(outcome)}. "
                   f"{merged.rows} rows in {experiment.table_path} ({len(merged.written)} run part(s) rewritten), "
                   f"{similar} in {experiment.similarity_path}")
        drawn = draw(plan, experiment, every_run, publish, summary, outcome, merged, len(runs))
    return max(drawn, report_skipped(outcome.skipped))


def draw(plan: Plan, experiment: ExperimentFolder, every_run: dict, publish, summary: str, outcome, merged,
         run_count: int) -> int:
    """The measuring's summary, then the figures and the report (figures=true and rows to draw); their exit code.
    With nothing measured the summary shrinks to one line before publish's own."""
    if not (merged.rows and plan.analysis.figures):
        print(summary)
        return 0
    if outcome.measured or merged.written or outcome.busy:
        print(summary)
        summary = ""
    else:  # nothing measured: one line if nothing is to be drawn either
        summary = f"{run_count} run(s), {outcome.fresh} checkpoint(s) measured before{left_out_note(outcome)}"
    return publish.publish(plan, experiment, every_run, measured_note=summary)


def show_help() -> int:
    from conf.cli import ANALYSIS_FIELDS
    from conf.global_settings import describe_accepted, show_default

    print(__doc__.strip(), "\nanalysis options (the recipe; run settings filter the runs; launch options as train.py):")
    for name, item in ANALYSIS_FIELDS.items():
        print(f"  {name + '=' + show_default(item):<34} {item.metadata['doc']} (accepted: {describe_accepted(item)})")
    return 0


def run_command(arguments: list[str]) -> int:
    only_figures = bool(arguments) and arguments[0] == "figures"
    from figures import publish  # here: matplotlib and seaborn load only for drawing

    plan = parse_arguments(arguments[1:] if only_figures else arguments, analysis=True)
    setup_logging(plan.execution.log_level)
    experiment = ExperimentFolder.of_plan(plan)  # a preset file's study is read with that file (train.py's rule)
    every_run = experiment.read_runs()  # each run folder read once: the measuring, the table and the report take these
    if only_figures:
        return publish.publish(plan, experiment, every_run)
    return measure_experiment(plan, experiment, every_run, publish)


def main(arguments: list[str]) -> int:
    """`python analysis.py [figures|features|similarity|import] [key=value ...]`; see --help. Exit codes: 0 done, 1 a
    file was skipped or the environment failed (a read-only or full folder), 2 bad input (nothing written)
    (utils.command_shell)."""
    if any(argument in ("-h", "--help", "help") for argument in arguments):
        return show_help()
    return command_shell(run_command, arguments, SUBCOMMANDS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
