"""outputs/<experiment>/report.html — one page per experiment, viewable offline: what varies, every run
and its state, every figure, the learning-phase table and "stop pre-training here".

    write_report(experiment_dir, title, description, runs, drawn, skipped, phases, advice, notes)
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import pandas as pd

from checkpointing import ExperimentFolder
from figures import FIGURES
from utils import atomic_write_text

STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#f0f0f0}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}h2{border-bottom:1px solid #ccc}
.note{color:#666;font-size:13px}"""


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, na_rep="–", float_format=lambda value: f"{value:.4g}", border=0)


def varying_settings(runs: pd.DataFrame, ignore=("run_id", "state", "iteration", "kind", "parent")) -> pd.DataFrame:
    """key -> the values it takes across the runs, for the keys that take more than one."""
    rows = [{"setting": key, "values": ", ".join(map(str, sorted(runs[key].dropna().unique(), key=str)))}
            for key in runs.columns if key not in ignore and runs[key].astype(str).nunique() > 1]
    return pd.DataFrame(rows, columns=["setting", "values"])


def _figure_parts(drawn: dict, experiment_dir: Path) -> list[str]:
    """Each drawn figure's PNG, linking its PDF, by paths relative to the experiment folder."""
    parts = []
    for name, paths in drawn.items():
        parts.append(f"<h3>{html.escape(name)} <span class='note'>({html.escape(FIGURES[name].paper)})</span></h3>")
        for figure_path in paths:  # its own name: `path` is the report's, written below
            if figure_path.suffix == ".png":
                relative = figure_path.relative_to(experiment_dir).as_posix()
                pdf = figure_path.with_suffix(".pdf").relative_to(experiment_dir).as_posix()
                parts.append(f"<a href='{pdf}'><img src='{relative}' alt='{html.escape(figure_path.stem)}'></a>")
    return parts


def transfer_tasks(experiment: ExperimentFolder) -> dict[str, str]:
    """run id -> the transfer task its transfer_accuracy rows read, or why it has none (the table's
    `transfer_task` column, analysis.py); {} when the table has no such column (measured before it)."""
    from pyarrow import ArrowException

    try:
        table = pd.read_parquet(experiment.table_path, columns=["run_id", "transfer_task"])
    except (ArrowException, KeyError, ValueError, OSError):  # no table, or one without the column
        return {}
    return {run: ", ".join(sorted(set(tasks.dropna()))) for run, tasks in table.groupby("run_id")["transfer_task"]}


def write_report(experiment_dir: Path, title: str, description: str, runs: pd.DataFrame, drawn: dict,
                 skipped: dict, phases: pd.DataFrame, advice: pd.DataFrame, notes: list[str],
                 transfer: pd.DataFrame | None = None) -> Path:
    """Write the experiment folder's report, beside the figures folder it links (relative links: the
    folder can move); returns its path."""
    experiment = ExperimentFolder(experiment_dir)
    varying = varying_settings(runs)
    tasks = transfer_tasks(experiment)  # LearnPhase's transfer probe: which task each run's was, or why none
    if tasks and "run_id" in runs:
        runs = runs.assign(transfer_task=runs["run_id"].map(tasks).fillna("not measured"))
    run_columns = ["run_id", "kind", "state", "iteration", "parent", "transfer_task"] + list(varying["setting"])
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>",
             f"<h1>{html.escape(title)}</h1><p>{html.escape(description)}</p>",
             f"<p class='note'>Generated {time.strftime('%Y-%m-%d %H:%M')} from "
             f"{html.escape(str(experiment.table_path))}; redraw with "
             "<code>python analysis.py figures ...</code>.</p>"]
    parts += [f"<p class='note'>{html.escape(note)}</p>" for note in notes]
    parts += ["<h2>Settings that vary</h2>", _table(varying) if len(varying) else "<p>none: a single configuration</p>",
              f"<h2>Runs ({len(runs)})</h2>", _table(runs[[column for column in run_columns if column in runs]])]
    parts += ["<h2>Figures</h2>", *_figure_parts(drawn, experiment_dir)]
    if skipped:
        parts.append("<h3>Not drawn</h3><ul>" + "".join(
            f"<li>{html.escape(name)}: {html.escape(reason)}</li>" for name, reason in skipped.items()) + "</ul>")
    parts += ["<h2>Learning phases (LearnPhase)</h2>",
              "<p class='note'>Iterations where each layer's test reconstruction loss leaves its plateau, reaches "
              "its minimum and rises again (tolerance: 5 % of the curve's range; figures/phases.py), the "
              "transfer-probe peak and the classifier's best test accuracy.</p>",
              "<h3>Stop pre-training here (read at the last hidden layer)</h3>",
              _table(advice) if len(advice) else "<p>no reconstruction curves</p>",
              "<h3>Every layer</h3>", _table(phases) if len(phases) else "<p>no reconstruction curves</p>"]
    if transfer is not None and len(transfer):
        parts += ["<h2>Transfer from the parent's checkpoints (LearnPhase)</h2>",
                  "<p class='note'>Per parent: the start iteration whose children ended with the best test accuracy "
                  "on their task (mean over seeds), against the iteration where the parent's own classifier was "
                  "best and its phase table's 'stop pre-training here' (figures/transfer.py).</p>",
                  _table(transfer), *transfer_sentences(transfer)]
    atomic_write_text(experiment.report_path, "\n".join(parts) + "\n")
    return experiment.report_path


def transfer_sentences(transfer: pd.DataFrame) -> list[str]:
    """One sentence per parent and child recipe: where transfer was best, and how far before the classifier's best."""
    sentences = []
    for _, row in transfer.iterrows():
        best, classifier = row["best start iteration"], row["parent's classifier best"]
        where = ("before" if best < classifier else "at" if best == classifier else "after") if classifier == classifier else "?"
        sentences.append(f"<p>{html.escape(row['parent'])} → {html.escape(row['child'])}: children started at iteration "
                         f"{best:g} ended best ({row['its final accuracy']:.3f}, {row['seeds']} seed(s)); that is "
                         f"{where} the parent's best classifier (iteration {classifier:g}).</p>")
    return sentences
