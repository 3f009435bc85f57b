"""What the last `analysis.py` drew, and from what: `figures/.published.json` (ExperimentFolder.publication_path).

    inputs = Inputs.of(experiment, plan, runs)      # stamps of the tables, the run table, figures/'s code
    inputs.unchanged(record)                         # True: nothing to draw or write ("nothing new")
    inputs.figure_key(spec)                          # a figure is redrawn only when its key changed

A figure is a pure function of its table (metrics.parquet or similarity.parquet, as its FigureSpec says),
the command line's run filter and analysis options (the question: which rows are drawn) and the code of figures/
and findings/; the report adds the run table (states,
iterations). The formats asked for (figure_formats=) are in no key: a figure that lacks one is drawn again, one
that has more (PDFs made by an earlier call) is kept as it is.
The tables are folders of parts that are only ever replaced whole, and only when their rows change
(measuring/store.py), so each part's size and modification time stand for its content: a call with
nothing new reads a few stats and hashes the few files it wrote (below), reads no Parquet and draws nothing.

The record lists each figure's files; after drawing, figures/publish.py removes every figure file of the
folder that the new record does not list (remove_unlisted_figures), so the folder holds what the report shows.

The outputs are trusted by content, not presence: the record holds each file's size and sha256 as written
(each figure's "contents", and "outputs" for report.html and phases.csv). A figure file that differs
(emptied, edited, gone) has its figure drawn again; a report or phases.csv that differs is written again
(from the table). Checking costs a stat and a sha256 of each of these few small files, nothing more.
A record written before contents were recorded has none: everything is drawn once more.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pandas as pd

from folders import ExperimentFolder
from utils import atomic_write_json, current_record, file_stamp, sha256_file, signature

# figures/ and the read-out they draw (findings/): a change to either draws the figures again
CODE = (Path(__file__).resolve().parent, Path(__file__).resolve().parent.parent / "findings")


def folder_stamp(folder: Path) -> list:
    """[name, size, mtime] of every visible file of a table folder (hidden index and lock files aside)."""
    if not folder.is_dir():
        return [folder.name, file_stamp(folder)]  # no table folder (yet): its stamp says so
    return sorted([path.name, file_stamp(path)] for path in folder.iterdir() if not path.name.startswith("."))


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Everything the figures, phases.csv and the report are drawn from, as digests."""

    tables: dict[str, str]  # {"metrics" | "similarity": digest of the table folder's parts}
    runs: str  # the run table: ids, states, iterations, settings (the report's)
    context: str  # the figure code, the run filter and analysis options typed, the experiment's name and description
    formats: tuple[str, ...] = ("png",)  # the files each figure must have (figure_formats=): not in any key

    @classmethod
    def of(cls, experiment: ExperimentFolder, filter_words: str, description: str, runs: pd.DataFrame,
           formats: tuple[str, ...] = ("png",)) -> "Inputs":
        code = [[f"{folder.name}/{path.name}", hashlib.sha256(path.read_bytes()).hexdigest()]
                for folder in CODE for path in sorted(folder.glob("*.py"))]
        return cls(tables={"metrics": signature(folder_stamp(experiment.table_path)),
                           "similarity": signature(folder_stamp(experiment.similarity_path))},
                   runs=signature(runs.to_json(orient="split", default_handler=str)),
                   context=signature([code, filter_words, experiment.path.name, description]), formats=formats)

    def figure_key(self, table: str) -> str:
        """What a figure drawn from `table` depends on."""
        return signature([self.context, self.tables[table]])

    def in_formats(self, entry: dict) -> bool:
        """Whether a figure's record entry has a file in every format asked for (a skipped figure has none to
        have). A format drawn before and not asked for now is kept: PDFs made once with figure_formats=png,pdf
        stay through the plain calls after it, until their figure's table changes."""
        drawn = {Path(name).suffix[1:] for name in entry.get("files", [])}
        return "skipped" in entry or set(self.formats) <= drawn

    def report_key(self) -> str:
        """What the whole publication was built from (the record's built_from: utils.current_record)."""
        return signature([self.context, self.tables, self.runs])

    def unchanged(self, experiment: ExperimentFolder) -> dict | None:
        """The last publication's record when it drew from these very inputs (utils.current_record) and every file
        it wrote still holds what it wrote (size and sha256: an emptied figure or an edited report is not "up to
        date"); None otherwise."""
        record = current_record(experiment.publication_path, self.report_key())
        if record is None or not outputs_intact(experiment, record):
            return None
        intact = all(figure_intact(experiment.figures_path, entry) and self.in_formats(entry)
                     for entry in record.get("figures", {}).values())
        return record if intact else None


def file_digest(path: Path) -> list | None:
    """[size, sha256] of a file as it is now; None when it is missing or unreadable."""
    try:
        return [path.stat().st_size, sha256_file(path)]
    except OSError:
        return None


def same_content(path: Path, recorded) -> bool:
    """Whether the file holds what the record says was written: the size first (a stat), then the sha256."""
    if not isinstance(recorded, list) or len(recorded) != 2:
        return False
    try:
        if path.stat().st_size != recorded[0]:
            return False
        return sha256_file(path) == recorded[1]
    except OSError:
        return False


def figure_intact(folder: Path, entry: dict) -> bool:
    """Whether every file of a figure's record entry holds what was drawn (an entry without contents, a damaged
    record's, is not: its figure is drawn again)."""
    contents = entry.get("contents")
    if not isinstance(contents, dict):
        return False
    return all(same_content(folder / name, contents.get(name)) for name in entry.get("files", []))


def written(experiment: ExperimentFolder) -> tuple[Path, ...]:
    """What a publication writes besides the figures: the report, phases.csv and findings.csv."""
    return experiment.report_path, experiment.phases_path, experiment.findings_path


def output_digests(experiment: ExperimentFolder) -> dict:
    """The record's "outputs": what report.html, phases.csv and findings.csv hold now, just written."""
    return {path.name: file_digest(path) for path in written(experiment)}


def outputs_intact(experiment: ExperimentFolder, record: dict) -> bool:
    """Whether report.html, phases.csv and findings.csv still hold what the last publication wrote."""
    outputs = record.get("outputs")
    if not isinstance(outputs, dict):
        return False
    return all(same_content(path, outputs.get(path.name)) for path in written(experiment))


def read_record(experiment: ExperimentFolder) -> dict:
    """The last publication's record; {} when there is none or it is unreadable (everything is drawn)."""
    try:
        record = json.loads(experiment.publication_path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_record(experiment: ExperimentFolder, record: dict) -> None:
    atomic_write_json(experiment.publication_path, record)

