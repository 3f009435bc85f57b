"""outputs/<experiment>/report.html — one page per experiment, viewable offline: what ran, what it found (and which
runs failed, diverged or were skipped, and why), every figure, every run and its state, the learning-phase table
and "stop pre-training here".

    write_report(experiment, title, description, runs, drawn, skipped, phases, advice, notes,
                 findings=[sentence, ...], troubled=troubled_runs(runs, measured_run_ids, filter_words))
"""

from __future__ import annotations

import html
import itertools
import time
from pathlib import Path

import pandas as pd

from figures import FIGURES
from folders import ExperimentFolder
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
EVAL_MODE, BATCH_STATISTICS = "classifier_accuracy", "classifier_accuracy_batch_statistics"  # metrics/registry.py
# Eval-mode test accuracy this far below the accuracy with batch statistics flags a checkpoint. With BatchNorm's
# usual momentum (0.1) the two differ by a batch's sampling noise, and while the weights move fast by the running
# statistics' short lag: at most 3.5 points at every checkpoint of a CONV-2-16 trained to 0.81 test accuracy, at
# most 12.5 points mid-training in a two-conv net (lr 0.05, 128 test examples). Running statistics left far behind
# cost 34 points in that net with momentum 0.001 (0.38 vs 0.73) and 83 in a torchvision MobileNetV3 with momentum
# 0.01 (0.09 vs 0.92). Twenty points flags those and not the transient (tests/test_eval_mode.py trains both nets).
EVAL_MODE_MARGIN = 0.20


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
    """key -> the values it takes across the runs, for the keys that take more than one (`unknown` one of them; a
    size an arch does not take none; whole numbers as such: depth 2, not the 2.0 of a column with gaps)."""
    from findings.conditions import record_value

    rows = [{"setting": key, "values": ", ".join(sorted({str(record_value(key, value)) for value in runs[key].dropna()}))}
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
    # NaN: a skipped run has no settings, an arch no size it does not take (a training setting an imported run was
    # not told is the text `unknown`: figures/publish.py run_table)
    if value is None or value != value:
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


SHORT_LABEL = 48  # characters: a longer condition is named R1, R2, … in the findings table, spelt out in its legend


def short_labels(conditions) -> dict:
    """condition -> its label in the findings table: the condition itself when short (up to SHORT_LABEL characters:
    three key=value pairs), else R1, R2, … in order."""
    labels, count = {}, 0
    for condition in dict.fromkeys(conditions):
        if len(condition) <= SHORT_LABEL:
            labels[condition] = condition
        else:
            count += 1
            labels[condition] = f"R{count}"
    return labels


def estimate_cell(row: pd.Series) -> str:
    """`+4.2 [1.6, 6.8] points` (accuracies in points), `2 [1.4, 2.6] layers`, `0.71 (1 seed)`, `–`."""
    if row["estimate"] != row["estimate"]:
        return "–"
    scale, unit = (100, "points") if "accuracy" in str(row["unit"]) else (1, str(row["unit"]))
    sign = "+" if row["question"] != "effective_depth" else ""
    value = f"{row['estimate'] * scale:{sign}.2f}"
    if row["seeds"] < 2:
        return f"{value} {unit} (1 seed)"
    return f"{value} [{row['low'] * scale:{sign}.2f}, {row['high'] * scale:{sign}.2f}] {unit}"


def findings_table(table: pd.DataFrame, labels: dict) -> str:
    """One row per finding: story, condition (short label), question, the estimate with its interval over
    seeds, the seed count, the checkpoint it is read at and the verdict."""
    rows = ["<tr><th>story</th><th>condition</th><th>question</th><th>estimate [97.5 % interval]</th><th>seeds</th>"
            "<th>at iteration</th><th>verdict</th></tr>"]
    for _, row in table.iterrows():
        at = "–" if row["checkpoint"] != row["checkpoint"] else f"{row['checkpoint']:g}" + (
            f" vs {row['compared_to']:g}" if row["compared_to"] == row["compared_to"] else "")
        cells = (row["story"].split(" (")[0], labels[row["condition"]], row["question"].replace("_", " "),
                 estimate_cell(row), str(int(row["seeds"])), at, row["verdict"])
        rows.append("<tr>" + "".join(f"<td>{_text(str(cell))}</td>" for cell in cells) + "</tr>")
    return "<table class='findings-table'>" + "".join(rows) + "</table>"


def findings_section(table: pd.DataFrame, troubled: list[tuple] = (), unfinished: set = frozenset(),
                     lagging: dict | None = None) -> str:
    """The report's first section: the findings table (findings/readout.py's rows), the legend of its short
    condition labels, one short sentence per finding grouped by story (marked when some of its runs are not
    done), then each run that failed, diverged or was skipped, with why ((run id, state, reason)), then each run
    whose eval-mode accuracy lags its batch statistics ({run id: phrase}: eval_mode_lags)."""
    parts = ["<h2>Findings</h2>"]
    if len(table):
        labels = short_labels(table["condition"])
        parts.append(findings_table(table, labels))
        legend = [(label, condition) for condition, label in labels.items() if label != condition]
        if legend:
            parts.append("<p class='note'>Conditions: " + "; ".join(f"<b>{html.escape(label)}</b> = {html.escape(condition)}"
                                                                  for label, condition in legend) + "</p>")
        parts.append("<p class='note'>A direction is stated only when the 97.5 % t-interval over seeds excludes no "
                     "difference by more than three test examples (docs/experiments.md#reading-the-results); one "
                     "seed gets its value and no direction.</p>")
        for story, group in itertools.groupby(table.to_dict("records"), key=lambda row: row["story"]):
            parts.append(f"<h3>{html.escape(story)}</h3><ul class='findings'>")
            for row in group:
                late = len(set(row["runs"].split()) & set(unfinished))
                text = f"{labels[row['condition']]}: {row['statement']}." + (
                    f" ({late} of its runs not done: read at their newest measured checkpoint.)" if late else "")
                parts.append(f"<li>{html.escape(text)}</li>")
            parts.append("</ul>")
    if troubled:
        parts.append(f"<h3>Runs that failed, diverged or were skipped ({len(troubled)})</h3><ul class='findings'>"
                     + "".join(f"<li>{run_cell(run)}: {html.escape(state)}: {html.escape(str(reason))}</li>"
                               for run, state, reason in troubled) + "</ul>")
    if lagging:
        parts.append(f"<h3>Runs measured in eval mode far below their batch statistics ({len(lagging)})</h3>"
                     "<ul class='findings'>" + "".join(f"<li>{run_cell(run)}: {html.escape(phrase)}</li>"
                                                       for run, phrase in lagging.items()) + "</ul>")
    if not len(table) and not troubled and not lagging:
        parts.append("<p class='note'>no finding yet; no run failed, diverged or was skipped</p>")
    return "\n".join(parts)


def _figure_parts(drawn: dict, experiment_dir: Path) -> list[str]:
    """Each drawn figure's PNG, linking its PDF where one was drawn (figure_formats=png,pdf), else the PNG at full
    size, by paths relative to the experiment folder."""
    parts = []
    for name, paths in drawn.items():
        parts.append(f"<h3>{html.escape(name)} <span class='note'>({html.escape(FIGURES[name].paper)})</span></h3>")
        for figure_path in paths:  # its own name: `path` is the report's, written below
            if figure_path.suffix == ".png":
                relative = figure_path.relative_to(experiment_dir).as_posix()
                pdf = figure_path.with_suffix(".pdf")
                target = pdf.relative_to(experiment_dir).as_posix() if pdf in paths else relative
                parts.append(f"<a href='{target}'><img src='{relative}' alt='{html.escape(figure_path.stem)}'></a>")
    return parts


def transfer_tasks(table: pd.DataFrame) -> dict[str, str]:
    """run id -> the transfer task its transfer_accuracy rows read, or why it has none (its other rows say why): the
    `transfer_task` column of the rows the report reads (one question: findings/table.py question_rows)."""
    transfer = table["metric"] == "transfer_accuracy"
    said = table[transfer | ~table["run_id"].isin(set(table.loc[transfer, "run_id"]))]
    return {run: ", ".join(sorted(set(tasks.dropna()))) for run, tasks in said.groupby("run_id")["transfer_task"]}


def eval_mode_lags(table: pd.DataFrame, margin: float = EVAL_MODE_MARGIN) -> dict[str, str]:
    """`eval_mode_lags(metrics)` -> {run id: one phrase} for each run with a checkpoint whose eval-mode test accuracy
    (classifier_accuracy: BatchNorm on its running statistics, as every metric is measured) is below its test
    accuracy with BatchNorm on each batch's own statistics (classifier_accuracy_batch_statistics) by more than
    `margin` (EVAL_MODE_MARGIN, 20 points: why at its definition). The phrase names the checkpoint with the widest
    gap and both accuracies: "eval mode 0.09 vs batch statistics 0.92 at iteration 256: ...". `table`: rows of the
    metrics table (run_id, iteration, metric, split, value); checkpoints without both accuracies are never flagged."""
    rows = table[table["metric"].isin((EVAL_MODE, BATCH_STATISTICS)) & (table["split"] == "test")]
    accuracies = rows.pivot_table(index=["run_id", "iteration"], columns="metric", values="value", aggfunc="first")
    if not {EVAL_MODE, BATCH_STATISTICS} <= set(accuracies.columns):
        return {}
    gaps = (accuracies[BATCH_STATISTICS] - accuracies[EVAL_MODE]).dropna()
    lagging = gaps[gaps > margin]
    phrases = {}
    for run_id, run_gaps in lagging.groupby(level="run_id"):
        widest = run_gaps.idxmax()
        others = f" (the widest of {len(run_gaps)} checkpoints this far apart)" if len(run_gaps) > 1 else ""
        eval_mode, batch = accuracies.loc[widest, EVAL_MODE], accuracies.loc[widest, BATCH_STATISTICS]
        phrases[run_id] = (f"eval mode {eval_mode:.2f} vs batch statistics {batch:.2f} at iteration {widest[1]}{others}: "
                           "BatchNorm running statistics lag (momentum); the metrics are eval mode")
    return phrases


def write_report(experiment: ExperimentFolder, title: str, description: str, runs: pd.DataFrame, drawn: dict,
                 skipped: dict, readout, notes: list[str], *, troubled: list[tuple] = (),
                 unfinished: set = frozenset(), lagging: dict | None = None, tasks: dict | None = None) -> Path:
    """Write the experiment folder's report, beside the figures folder it links (relative links: the
    folder can move); returns its path. Top to bottom: what ran (`description`), the Findings (the
    read-out's table and sentences, findings/readout.py; the `troubled` runs; the runs whose eval-mode accuracy
    lags their batch statistics, `lagging`: eval_mode_lags of the table), the figures, the runs (with `tasks`:
    transfer_tasks of the table, LearnPhase's transfer probe, which task each run's was or why none), the
    seed-mean phase table."""
    varying = varying_settings(runs)
    if tasks and "run_id" in runs:
        runs = runs.assign(transfer_task=runs["run_id"].map(tasks).fillna("not measured"))
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>",
             f"<h1>{html.escape(title)}</h1><p class='description'>{html.escape(description)}</p>",
             f"<p class='note'>Generated {time.strftime('%Y-%m-%d %H:%M')} from "
             f"{html.escape(str(experiment.table_path))}; every number of the findings is in "
             f"{html.escape(experiment.findings_path.name)}; redraw with "
             "<code>python analysis.py figures ...</code>.</p>"]
    parts += [f"<p class='note'>{html.escape(note)}</p>" for note in notes]
    parts += [findings_section(readout.table, list(troubled), unfinished, lagging), "<h2>Figures</h2>",
              *_figure_parts(drawn, experiment.path)]
    if skipped:
        parts.append("<h3>Not drawn</h3><ul>" + "".join(
            f"<li>{html.escape(name)}: {html.escape(reason)}</li>" for name, reason in skipped.items()) + "</ul>")
    parts += [f"<h2>Runs ({len(runs)})</h2>", "<h3>Settings that vary</h3>",
              _table(varying) if len(varying) else "<p>none: a single configuration</p>",
              "<p class='note'>Run ids are shortened (the hash cut): hover over one for the whole id.</p>",
              runs_table(runs, list(varying["setting"])) if len(runs) else "<p>no run</p>"]
    parts += phase_parts(readout.phases, experiment.phases_path.name)
    atomic_write_text(experiment.report_path, "\n".join(parts) + "\n")
    return experiment.report_path


# The phase table's columns a reader needs (phases.csv beside the report keeps them all: bands, spreads, reasons).
PHASE_SHOWN = ("condition", "layer", "seeds", "plateau_end", "minimum", "minimum_low", "minimum_high", "rise",
               "transfer_peak", "transfer_peak_low", "transfer_peak_high", "classifier_best", "missing_reason")


def phase_parts(phases: pd.DataFrame, file_name: str) -> list[str]:
    shown = [column for column in PHASE_SHOWN if column in phases]
    return ["<h2>Learning phases (LearnPhase), per condition</h2>",
            "<p class='note'>On each condition's seed-mean curves, at the checkpoints every seed has: the iterations "
            "where each layer's test reconstruction loss leaves its plateau, reaches its minimum and rises again, "
            "the transfer-probe peak and the classifier's best. Each turn is found on a 3-point running median "
            "with a tolerance τ of 5 % of the curve's range and carries its band (_low, _high); a turn the curve "
            "does not show by more than τ is left empty, with the reason. Whether a turn is beyond the seeds' "
            "noise is the findings' verdict above (findings/phases.py, findings/learning.py; every column: "
            f"{file_name} beside this report). Children (warm-started, transfer, later stages) have no phases.</p>",
            _table(phases[shown]) if len(phases) else "<p>no reconstruction curves of runs with phases</p>"]
