"""outputs/<experiment>/report.html — one page per experiment, viewable offline: what ran, what it found (and which
runs failed, diverged or were skipped, and why), every figure, every run and its state, the learning-phase table
and "stop pre-training here".

    write_report(experiment_dir, title, description, runs, drawn, skipped, phases, advice, notes,
                 findings=[sentence, ...], troubled=troubled_runs(runs, measured_run_ids, filter_words))
"""

from __future__ import annotations

import html
import itertools
import time
from pathlib import Path

import pandas as pd

from checkpointing import ExperimentFolder
from figures import FIGURES
from utils import atomic_write_text

# Every table fits the page (1400 px windows: tests/test_report_browser.py) however many settings vary: headers,
# run ids and any long unbroken value may wrap anywhere; short values ("done", "0.05") stay whole, so a column is
# never narrower than its longest short word and the table shrinks to the body's width.
STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
p,li,h1,h2,h3{overflow-wrap:anywhere}table{border-collapse:collapse;font-size:12px;margin:0.5em 0;max-width:100%}
td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}th,.run,.long{overflow-wrap:anywhere}
th{background:#f0f0f0}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}h2{border-bottom:1px solid #ccc}
.note{color:#666;font-size:13px}.findings li{margin:0.2em 0}"""
LONG_WORD = 16  # characters: a value with a longer unbroken word (a path, a list without spaces) may wrap anywhere
HASH_SHOWN = 4  # hex digits of a run id's hash shown in tables: the readable prefix says the rest (full id on hover)
TROUBLED_STATES = ("failed", "diverged", "skipped")  # run_table's states that the Findings list, with the reason


def _table(frame: pd.DataFrame) -> str:
    """A frame as an HTML table; its run id columns shortened (run_cell), everything else escaped."""
    shown = frame.copy()
    for column in shown.columns:
        if column in ("run_id", "parent"):
            shown[column] = shown[column].map(lambda run_id: run_cell(run_id) if isinstance(run_id, str) else run_id)
        elif shown[column].dtype == object:
            shown[column] = shown[column].map(lambda value: _text(value) if isinstance(value, str) else value)
    return shown.to_html(index=False, na_rep="–", float_format=lambda value: f"{value:.4g}", border=0, escape=False)


def varying_settings(runs: pd.DataFrame, ignore=("run_id", "state", "iteration", "kind", "parent", "reason")) -> pd.DataFrame:
    """key -> the values it takes across the runs, for the keys that take more than one."""
    rows = [{"setting": key, "values": ", ".join(map(str, sorted(runs[key].dropna().unique(), key=str)))}
            for key in runs.columns if key not in ignore and runs[key].dropna().astype(str).nunique() > 1]
    return pd.DataFrame(rows, columns=["setting", "values"])


def short_run_id(run_id: str) -> str:
    """`convnet4-w32-synthetic-s0-1a2b3c4d5e` -> `convnet4-w32-synthetic-s0-1a2b…`: the readable prefix and enough
    of the hash to tell apart runs whose prefixes agree (a folder name that is no run id stays whole)."""
    prefix, _, digest = run_id.rpartition("-")
    if not prefix or len(digest) <= HASH_SHOWN or not all(character in "0123456789abcdef" for character in digest):
        return run_id
    return f"{prefix}-{digest[:HASH_SHOWN]}…"


def run_cell(run_id: str) -> str:
    """A run id as a table cell's content: shortened, the full id on hover (and for search, copy and tests)."""
    return f"<span class='run' title='{html.escape(run_id)}'>{html.escape(short_run_id(run_id))}</span>" if run_id else ""


def _text(text: str) -> str:
    """Escaped text for a table cell; one with a word longer than LONG_WORD marked as one that may wrap anywhere."""
    escaped = html.escape(text)
    return f"<span class='long'>{escaped}</span>" if any(len(word) > LONG_WORD for word in text.split()) else escaped


def _cell(value) -> str:
    if value is None or value != value:  # NaN: a skipped run has no settings
        return "–"
    return _text(f"{value:.4g}" if isinstance(value, float) else str(value))


def runs_table(runs: pd.DataFrame, varying: list[str]) -> str:
    """One row per run: its shortened id, state (the reason on hover), iteration, and only the columns that say
    something: kind where it varies, parent where a run has one, the transfer probe's task (what the probe
    measured, or why not: a fact of the analysis, not a setting), the settings that vary."""
    def varies(column):
        return column in runs and runs[column].astype(str).nunique() > 1

    columns = ["run_id", "state", "iteration", *(["kind"] if varies("kind") else []),
               *(["parent"] if "parent" in runs and (runs["parent"].fillna("") != "").any() else []),
               *(["transfer_task"] if "transfer_task" in runs else []), *varying]
    # a header breaks after an underscore first (synthetic_ train_size), anywhere else only if it must
    rows = ["<tr>" + "".join(f"<th>{html.escape(column).replace('_', '_<wbr>')}</th>" for column in columns) + "</tr>"]
    for _, run in runs.iterrows():
        cells = []
        for column in columns:
            if column in ("run_id", "parent"):
                cells.append(f"<td>{run_cell(run[column] or '')}</td>")
            elif column == "state" and run.get("reason"):
                cells.append(f"<td title='{html.escape(str(run['reason']))}'>{_cell(run['state'])}</td>")
            else:
                cells.append(f"<td>{_cell(run[column])}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table class='runs'>" + "".join(rows) + "</table>"


def troubled_runs(runs: pd.DataFrame, measured: set[str] | None = None, filter_words: str = "") -> list[tuple]:
    """(run id, state, why) of every run that failed, diverged or was skipped (settings unusable), then of every
    other run with no row in the table (`measured`: the table's run ids; None: not known) — left out by the
    command line's filter (`filter_words`), or not measured yet."""
    troubled = []
    for _, run in runs.iterrows() if len(runs) else ():
        if run["state"] in TROUBLED_STATES:
            troubled.append((run["run_id"], run["state"], run.get("reason") or "no reason recorded"))
        elif measured is not None and run["run_id"] not in measured:
            why = f"left out by the command line's {filter_words}" if filter_words else "no checkpoint measured yet"
            troubled.append((run["run_id"], "skipped", why))
    return troubled


def findings_section(findings: list, troubled: list[tuple] = ()) -> str:
    """The report's first section: what the analysis found, one sentence each (plain text: escaped here;
    a (heading, sentence) pair groups consecutive sentences under their heading), then each run that
    failed, diverged or was skipped, with why ((run id, state, reason), troubled_runs)."""
    parts = ["<h2>Findings</h2>"]
    for heading, group in itertools.groupby(findings, key=lambda item: item[0] if isinstance(item, tuple) else ""):
        texts = [item[1] if isinstance(item, tuple) else item for item in group]
        parts += [f"<h3>{html.escape(heading)}</h3>"] if heading else []
        parts.append("<ul class='findings'>" + "".join(f"<li>{html.escape(text)}</li>" for text in texts) + "</ul>")
    if troubled:
        parts.append(f"<h3>Runs that failed, diverged or were skipped ({len(troubled)})</h3><ul class='findings'>"
                     + "".join(f"<li>{run_cell(run)}: {html.escape(state)}: {html.escape(str(reason))}</li>"
                               for run, state, reason in troubled) + "</ul>")
    if not findings and not troubled:
        parts.append("<p class='note'>no finding yet; no run failed, diverged or was skipped</p>")
    return "\n".join(parts)


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
                 transfer: pd.DataFrame | None = None, *, findings: list[str] = (), troubled: list[tuple] = ()) -> Path:
    """Write the experiment folder's report, beside the figures folder it links (relative links: the
    folder can move); returns its path. Top to bottom: what ran (`description`), the Findings (`findings`
    sentences, the `troubled` runs: findings_section), the figures, the runs, the phase and transfer tables."""
    experiment = ExperimentFolder(experiment_dir)
    varying = varying_settings(runs)
    tasks = transfer_tasks(experiment)  # LearnPhase's transfer probe: which task each run's was, or why none
    if tasks and "run_id" in runs:
        runs = runs.assign(transfer_task=runs["run_id"].map(tasks).fillna("not measured"))
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>",
             f"<h1>{html.escape(title)}</h1><p class='description'>{html.escape(description)}</p>",
             f"<p class='note'>Generated {time.strftime('%Y-%m-%d %H:%M')} from "
             f"{html.escape(str(experiment.table_path))}; redraw with "
             "<code>python analysis.py figures ...</code>.</p>"]
    parts += [f"<p class='note'>{html.escape(note)}</p>" for note in notes]
    parts += [findings_section(list(findings), list(troubled)), "<h2>Figures</h2>", *_figure_parts(drawn, experiment_dir)]
    if skipped:
        parts.append("<h3>Not drawn</h3><ul>" + "".join(
            f"<li>{html.escape(name)}: {html.escape(reason)}</li>" for name, reason in skipped.items()) + "</ul>")
    parts += [f"<h2>Runs ({len(runs)})</h2>", "<h3>Settings that vary</h3>",
              _table(varying) if len(varying) else "<p>none: a single configuration</p>",
              "<p class='note'>Run ids are shortened (the hash cut): hover over one for the whole id.</p>",
              runs_table(runs, list(varying["setting"])) if len(runs) else "<p>no run</p>"]
    parts += phase_parts(phases, advice) + transfer_parts(transfer)
    atomic_write_text(experiment.report_path, "\n".join(parts) + "\n")
    return experiment.report_path


# The phase table's columns a reader needs (the CSV beside the report keeps them all: bands, tolerances, reasons).
PHASE_SHOWN = ("run_id", "layer", "plateau_end", "minimum", "minimum_low", "minimum_high", "rise", "rise_held",
               "transfer_peak", "transfer_peak_low", "transfer_peak_high", "classifier_best", "missing_reason")


def phase_parts(phases: pd.DataFrame, advice: pd.DataFrame) -> list[str]:
    shown = [column for column in PHASE_SHOWN if column in phases]
    return ["<h2>Learning phases (LearnPhase)</h2>",
            "<p class='note'>Iterations where each layer's test reconstruction loss leaves its plateau, reaches "
            "its minimum and rises again, the transfer-probe peak and the classifier's best test accuracy. Each "
            "turn is found on a 3-point running median with a tolerance τ of 5 % of the curve's range, and "
            "carries its band (_low, _high: the checkpoints within τ of it); a turn the curve does not show by "
            "more than τ is left empty, with the reason (the rules: figures/phases.py; every column: "
            "the phase table's CSV beside this report).</p>",
            "<h3>Stop pre-training here (read at the last hidden layer)</h3>",
            _table(advice[[column for column in advice if column in (*PHASE_SHOWN, "read_at_layer",
                                                                       "stop_pretraining_at",
                                                                       "before_classifier_best")]])
            if len(advice) else "<p>no reconstruction curves</p>",
            "<h3>Every layer</h3>", _table(phases[shown]) if len(phases) else "<p>no reconstruction curves</p>"]


def transfer_parts(transfer: pd.DataFrame | None) -> list[str]:
    if transfer is None or not len(transfer):
        return []
    return ["<h2>Transfer from the parent's checkpoints (LearnPhase)</h2>",
            "<p class='note'>Per parent: the start iteration whose children ended with the best test accuracy "
            "on their task (mean over seeds), against the iteration where the parent's own classifier was "
            "best and its phase table's 'stop pre-training here' (figures/transfer.py).</p>",
            _table(transfer), *(f"<p>{html.escape(text)}</p>" for text in transfer_sentences(transfer))]


def transfer_sentences(transfer: pd.DataFrame | None) -> list[str]:
    """One plain sentence per parent and child recipe: where transfer was best, against the classifier's best."""
    sentences = []
    for _, row in (transfer if transfer is not None else pd.DataFrame()).iterrows():
        best, classifier = row["best start iteration"], row["parent's classifier best"]
        where = ("before" if best < classifier else "at" if best == classifier else "after") if classifier == classifier else "?"
        spread = "1 seed, no spread" if row["seeds"] == 1 else f"{row['seeds']} seeds, std {row['spread (std)']:.3f}"
        earliest = row["earliest start within τ"]
        tied = (f"; the earliest start within τ={row['τ']:.3g} of it is iteration {earliest:g}, "
                + ("before" if earliest < classifier else "at" if earliest == classifier else "after")
                + " the classifier's best") if earliest != best and classifier == classifier else ""
        sentences.append(f"Transfer, {row['parent']} → {row['child']}: children started at iteration {best:g} ended "
                         f"best ({row['its final accuracy']:.3f}; {spread}); that is {where} the parent's best "
                         f"classifier (iteration {classifier:g}){tied}.")
    return sentences
