"""Which runs a finding speaks of: conditions (every setting but the seed), their short labels, and the scope.

    runs = run_rows(metrics)                   # one row per run: its settings and kind (scratch, stage1, stage, child)
    labels = condition_labels(runs)               # run id -> "depth=4, label_noise=0.2" (the keys that vary among them)
    scope_words(runs, all_runs)                # "2 stage-1 parent(s) of the table's 22 runs; a stage-1 parent trains …"
    setting_words(row, ["arch", "depth", "lr"]) # "arch=torchvision:resnet18, lr=unknown": a size it does not take left out

The table holds null for a training setting an imported run was not told (conf TRAINING_FACTS: shown `unknown`,
one value of its own: never equal to a trained run's, and two unknowns are not a sweep) and for a model size its
arch does not take (conf MODEL_SIZES: left out of every label).

A child (warm-started, transfer or later-stage run: conf/plasticity.py run_kind) starts from its parent's
state, so its curves have no learning phases and no effective depth of their own: the phase and collapse
questions read the other runs only, and say so when that is not every run.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd

from conf import Settings
from conf.global_settings import MODEL_SIZES, SETTING_FIELDS, UNKNOWN
from conf.plasticity import pretrains, run_kind, transfers

SETTINGS = tuple(SETTING_FIELDS)
WHOLE = {name for name, field in SETTING_FIELDS.items() if field.default.__class__ is int}  # int settings


def missing(value) -> bool:
    """Whether a table cell holds no value (null: None or NaN)."""
    return value is None or (isinstance(value, float) and value != value) or value is pd.NA


def record_value(name: str, value):
    """A table cell as the settings record holds it: None for null, a whole-number setting as an int (a column
    with nulls is float: epochs 20.0 -> 20), a numpy scalar as Python's."""
    if missing(value):
        return None
    if name in WHOLE and isinstance(value, float) and value.is_integer():
        return int(value)
    return value.item() if hasattr(value, "item") else value


def shown_value(name: str, value):
    """A setting's value as a label shows it (record_value): `unknown` for null, imported_from as `imported` or
    `trained here` (the files' hash tells two imports apart as a seed does: it is no condition of its own)."""
    if missing(value):
        return UNKNOWN
    if name == "imported_from":
        return "imported" if value else "trained here"
    return record_value(name, value)


def setting_words(row: pd.Series, keys) -> str:
    """`depth=4, lr=0.1` for the settings `keys` of one row: a training setting the run was not told as
    `lr=unknown`, a model size its arch does not take (null) left out — for the arch, which says why it has none,
    when `keys` do not name it (`depth=2` beside `arch=torchvision:resnet18`)."""
    words, named = [], set()
    for key in keys:
        if key in MODEL_SIZES and missing(row[key]):
            key = "arch"  # a torchvision builder's run has no depth: its arch tells it apart instead
            if key in keys or key in named or key not in row:
                continue
        named.add(key)
        shown = shown_value(key, row[key])
        words.append(str(shown) if key == "imported_from" else f"{key}={shown}")
    return ", ".join(words)


def condition_column(frame: pd.DataFrame, key: str) -> pd.Series:
    """A settings column as conditions compare it: as it is (null a value of its own), but imported_from as whether
    the run was imported (shown_value): two imports of one condition are two of its seeds."""
    column = frame[key]
    return column.map(lambda value: shown_value(key, value)) if key == "imported_from" else column


POOLED = ("seed",)  # seeds of one condition are one line: their mean with a confidence band (figures/style.py SEED_BAND)


def varying(metrics: pd.DataFrame, candidates, exclude=("seed",)) -> list[str]:
    """The settings among `candidates` that take more than one value in the table; null (a training setting an
    imported run was not told, a size its arch does not take) is one value of its own: it differs from every
    number, and two nulls are no sweep."""
    return [key for key in candidates if key in metrics and key not in exclude
            and condition_column(metrics, key).nunique(dropna=False) > 1]


def grouping_keys(rows: pd.DataFrame, plotted=(), pooled=POOLED, also=()) -> list[str]:
    """The settings (conf.Settings fields, then the columns `also`) that vary among `rows`, except the pooled
    ones (seeds) and the ones the figure draws on an axis, as hue or as a facet (`plotted`)."""
    return varying(rows, [*SETTINGS, *also], exclude=(*pooled, *plotted))


def settings_of(row: pd.Series) -> Settings:
    """A run's Settings from one of its table rows: the table holds list settings as JSON text
    (measuring/store.py), numbers as numpy scalars, null as None or NaN (an unknown training setting, a size the
    arch does not take), whole numbers as floats in a column with nulls."""
    record = {name: row[name] for name in SETTINGS if name in row}
    return Settings.from_record({key: json.loads(value) if isinstance(value, str) and value.startswith("[")
                                 else record_value(key, value) for key, value in record.items()})


# The settings conf/plasticity.py's run kinds read: a frame's rows are told apart by the same rules as a run.
KIND_COLUMNS = ("pretrain_fraction", "pretrain_dataset", "epochs", "stage", "start_from_iteration")


def per_run(frame: pd.DataFrame, rule) -> pd.Series:
    """`rule(settings)` (a conf/plasticity.py run-kind rule) for every row, read from its KIND_COLUMNS: one call per
    distinct set of them, mapped back onto the rows by a merge (a table holds millions of rows, a grid few sets)."""
    columns = [column for column in KIND_COLUMNS if column in frame]
    distinct = frame[columns].drop_duplicates()
    answers = distinct.assign(answer=[rule(SimpleNamespace(**dict(zip(columns, key))))
                                      for key in distinct.itertuples(index=False, name=None)])
    return frame[columns].merge(answers, on=columns, how="left")["answer"].set_axis(frame.index)


def staged(metrics: pd.DataFrame) -> pd.Series:
    """Rows of runs in a staged protocol (pretraining on a subset or on another dataset): conf/plasticity.py."""
    return per_run(metrics, pretrains).astype(bool)


def children(metrics: pd.DataFrame) -> pd.Series:
    """Rows of children: runs that start from a parent's checkpoint (conf/plasticity.py run_kind "child")."""
    return per_run(metrics, lambda settings: run_kind(settings) == "child").astype(bool)


def transferred(metrics: pd.DataFrame) -> pd.Series:
    """Rows of transfer children (conf/plasticity.py transfers): figures/transfer.py draws them; a warm-start figure
    would mix two protocols."""
    return per_run(metrics, transfers).astype(bool)


KIND_WORDS = {"scratch": "run(s) trained from scratch", "stage1": "stage-1 parent(s)", "stage": "later-stage run(s)",
              "child": "child run(s)"}


def condition_keys(frame: pd.DataFrame) -> list[str]:
    """The run settings (conf.Settings fields) in the table, but the seed: runs that agree on all of them
    are seeds of one condition."""
    return [name for name in SETTINGS if name in frame and name != "seed"]


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Settings columns as the text a label shows (shown_value): null is `unknown`, one value of its own — two
    runs that were not told their lr agree on it, and neither agrees with a run of lr=0.02."""
    return frame.apply(lambda column: column.map(lambda value: str(shown_value(column.name, value))))


def varying_keys(runs: pd.DataFrame) -> list[str]:
    """The condition keys that take more than one value among `runs` (one row per run)."""
    keys = condition_keys(runs)
    counts = as_text(runs[keys]).nunique() if keys else pd.Series(dtype=int)
    return [key for key in keys if counts[key] > 1]


def run_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its settings as the table holds them and `kind`, conf.plasticity.run_kind's rule on
    the columns (scratch: no pretraining; child: pretraining and epochs of its own; else a stage)."""
    runs = metrics.drop_duplicates("run_id").reset_index(drop=True)
    column = lambda name, default: runs[name] if name in runs else pd.Series(default, index=runs.index)  # noqa: E731
    pretrains = (column("pretrain_fraction", 0.0) > 0) | (column("pretrain_dataset", "same") != "same")
    kind = pd.Series("child", index=runs.index).mask(~pretrains, "scratch")
    stages = pretrains & (column("epochs", 1) == 0)  # few: the table's `stage` is the checkpoint's, so ask the settings
    kind[stages] = [run_kind(settings_of(row)) for _, row in runs[stages].iterrows()]
    return runs.assign(kind=kind)


def own_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that trained from their own initialisation: everything but children and later stages."""
    return runs[runs["kind"].isin(("scratch", "stage1"))]


def distinguishing_keys(runs: pd.DataFrame) -> list[str]:
    """The fewest varying keys that tell the conditions among `runs` apart (greedy: each step adds the key that
    separates the most conditions), in settings order. A table that holds several grids (the demo's three stories)
    varies a dozen keys together; naming them all made every label a paragraph."""
    keys = varying_keys(runs)
    conditions = {tuple(values) for values in as_text(runs[keys]).to_numpy()}  # the distinct conditions, as tuples

    def told_apart(columns: list[str]) -> int:  # how many conditions these keys alone tell apart
        positions = [keys.index(key) for key in columns]
        return len({tuple(condition[position] for position in positions) for condition in conditions})

    chosen: list[str] = []
    while keys and (told_apart(chosen) if chosen else 1) < len(conditions):
        chosen.append(max((key for key in keys if key not in chosen), key=lambda key: told_apart([*chosen, key])))
    return [key for key in keys if key in chosen]


def condition_labels(runs: pd.DataFrame, all_runs: pd.DataFrame | None = None) -> dict:
    """run id -> its condition in words: the distinguishing keys among `runs` (`depth=4, label_noise=0.2`). With one
    condition: "every run", or what the runs are when they are not all of `all_runs` ("the 2 stage-1 parents")."""
    keys = distinguishing_keys(runs)
    alone = "every run" if all_runs is None or len(runs) == len(all_runs) else "the " + kind_words(runs)
    return {row["run_id"]: setting_words(row, keys) or alone for _, row in runs.iterrows()}


def kind_words(runs: pd.DataFrame) -> str:
    """`2 stage-1 parent(s), 4 run(s) trained from scratch`."""
    return ", ".join(f"{count} {KIND_WORDS[kind]}" for kind, count in runs["kind"].value_counts().items())


def scope_words(chosen: pd.DataFrame, all_runs: pd.DataFrame) -> str:
    """What a finding's runs are when that needs saying: a stage-1 parent's subset (its accuracies and NCC are
    on the classes or examples it trained on), and how many of the table's runs the finding reads."""
    stage1 = chosen[chosen["kind"] == "stage1"]
    if not len(stage1):
        return ""
    fractions = ", ".join(sorted({f"{value:g}" for value in stage1["pretrain_fraction"]}))
    subset = "/".join(sorted(set(stage1["pretrain_subset"]))) if "pretrain_subset" in stage1 else "examples"
    return (f"{kind_words(chosen)} of the table's {len(all_runs)} runs; a stage-1 parent trains on a subset "
            f"(pretrain_fraction={fractions} of the {subset}): its measures are on that subset")
