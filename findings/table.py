"""analysis.read_table(experiment_dir) — the one reader of the measured tables (metrics.parquet, similarity.parquet).

The tables hold every call's rows side by side, each under the analysis options it was measured with (its `options`
column; `depends_on` names the options its numbers depend on). The figures, the read-out and a notebook read one
question of them: the rows under one set of options (question_rows). Torch-free: drawing never loads it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from conf.analysis import asks_defaults, option_words, question_words


def read_parquet_again_if_changed(path: Path) -> pd.DataFrame:
    """The table (a folder of per-run parts) as one frame. A part removed by an
    analysis between the listing and the reading is a FileNotFoundError: read the folder once more."""
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        if not path.exists():
            raise
        return pd.read_parquet(path)


def question_rows(table: pd.DataFrame, analysis) -> pd.DataFrame:
    """The table's rows of one question: each row measured under the analysis options `analysis` gives the options
    its numbers depend on (its `depends_on` column; its `options` column says those it was measured under). The
    tables (metrics.parquet, similarity.parquet) hold every call's rows side by side; the figures, the read-out and
    analysis.read_table read one question, so no key appears twice. No registry needed: drawing loads no torch."""
    if asks_defaults(analysis):
        return table[table["options"] == ""]
    asked = {names: option_words(analysis, names.split()) for names in table["depends_on"].unique()}
    return table[table["options"] == table["depends_on"].map(asked)]


def describe_question(analysis) -> str:
    """"the default analysis options", or the options that decide numbers as the command line's words."""
    return question_words(analysis) or "the default analysis options"
