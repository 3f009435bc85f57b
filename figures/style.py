"""One look for every figure: seaborn's paper theme, log-scaled iterations, PNG + PDF written atomically, and
the recipe groups every figure draws apart.

    for fixed, rows in recipe_groups(metrics, plotted=("depth",)):   # one panel per recipe, depth as hue
        ...; axis.set_title(wrapped(fixed))                         # what the panel holds fixed
"""

from __future__ import annotations

import dataclasses
import io
import json
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node or in CI

import matplotlib.pyplot as pyplot  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn  # noqa: E402

from conf import Settings  # noqa: E402
from utils import atomic_write_bytes  # noqa: E402

seaborn.set_theme(context="paper", style="whitegrid", font_scale=1.1)
ITERATION_LABEL = "training iteration (log scale; 0 at the left)"
SEED_BAND = ("ci", 95)  # mean over seeds with a 95 % bootstrap confidence band


def iteration_axis(axis) -> None:
    """Iterations on a log scale that still shows iteration 0 (symlog: linear below 1)."""
    axis.set_xscale("symlog", linthresh=1)
    axis.set_xlim(left=0)
    axis.set_xlabel(ITERATION_LABEL)


def legend_outside(axis, **options) -> None:
    """The axis's legend to the right of its data area (constrained layout makes room), never over the curves."""
    axis.legend(fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                **options)


def new_figure(columns: int = 1, rows: int = 1, width: float = 4.6, height: float = 3.4):
    """A figure of rows x columns panels (constrained layout) and its axes, flattened row by row."""
    figure, axes = pyplot.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False,
                                   constrained_layout=True)
    return figure, axes.ravel()


def save(figure, stem: Path) -> list[Path]:
    """`stem`.png (150 dpi) and `stem`.pdf, each written to a temporary name and renamed."""
    paths = []
    for suffix, options in ((".png", {"dpi": 150}), (".pdf", {})):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=suffix[1:], **options)
        path = stem.parent / (stem.name + suffix)  # not with_suffix: stems hold values like 0.2
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def varying(metrics: pd.DataFrame, candidates, exclude=("seed",)) -> list[str]:
    """The settings among `candidates` that take more than one value in the table."""
    return [key for key in candidates if key in metrics and key not in exclude and metrics[key].nunique(dropna=False) > 1]


def setting_column(metrics: pd.DataFrame, name: str, default) -> pd.Series:
    """A run setting's column, or its default where the table predates the setting."""
    return metrics[name] if name in metrics else pd.Series(default, index=metrics.index)


def staged(metrics: pd.DataFrame) -> pd.Series:
    """Rows of runs in a staged protocol (pretraining on a subset or on another dataset): conf/plasticity.py."""
    return (setting_column(metrics, "pretrain_fraction", 0.0) > 0) | (setting_column(metrics, "pretrain_dataset", "same") != "same")


def transferred(metrics: pd.DataFrame) -> pd.Series:
    """Rows of children that start from a parent's checkpoint other than its end, or from another dataset's run
    (figures/transfer.py draws them; a warm-start figure would mix two protocols)."""
    return staged(metrics) & (setting_column(metrics, "epochs", 1) > 0) & (
        (setting_column(metrics, "start_from_iteration", "final") != "final")
        | (setting_column(metrics, "pretrain_dataset", "same") != "same"))


# -- recipes: what a figure holds fixed ---------------------------------------------------------------------

SETTINGS = tuple(field.name for field in dataclasses.fields(Settings))


def settings_of(row: pd.Series) -> Settings:
    """A run's Settings from one of its table rows: the table holds list settings as JSON text
    (metrics/store.py), numbers as numpy scalars."""
    record = {name: row[name] for name in SETTINGS if name in row}
    return Settings.from_record({key: json.loads(value) if isinstance(value, str) and value.startswith("[")
                                 else value.item() if hasattr(value, "item") else value
                                 for key, value in record.items()})
POOLED = ("seed",)  # seeds of one recipe are one line: their mean with a confidence band (SEED_BAND)
# What a one-recipe figure names when nothing varies: enough to tell it from another experiment's figure.
SUMMARY = ("dataset", "arch", "depth", "width", "optimizer", "lr", "epochs")


def describe(row: pd.Series, keys) -> str:
    """`key=value, ...` for the settings `keys` of one row."""
    return ", ".join(f"{key}={row[key]}" for key in keys)


def grouping_keys(rows: pd.DataFrame, plotted=(), pooled=POOLED, also=()) -> list[str]:
    """The settings (conf.Settings fields, then the columns `also`) that vary among `rows`, except the pooled
    ones (seeds) and the ones the figure draws on an axis, as hue or as a facet (`plotted`)."""
    return varying(rows, [*SETTINGS, *also], exclude=(*pooled, *plotted))


def recipe_groups(rows: pd.DataFrame, plotted=(), pooled=POOLED, also=()) -> list[tuple[str, pd.DataFrame]]:
    """[(what the group holds fixed, its rows)], one group per combination of every setting that varies among
    `rows` besides `plotted` and `pooled` (grouping_keys), sorted by those values. A figure draws each group in
    its own panel (or figure) and titles it with the description, so no line pools two recipes (two widths,
    optimizers or data sizes read as one curve). With a single recipe, the description names its SUMMARY."""
    keys = grouping_keys(rows, plotted, pooled, also)
    if rows.empty or not keys:
        summary = [key for key in SUMMARY if key in rows and key not in plotted]
        return [(describe(rows.iloc[0], summary) if len(rows) else "no runs", rows)]
    return [(describe(part.iloc[0], keys), part) for _, part in rows.groupby(keys, sort=True, dropna=False)]


def wrapped(text: str, width: int = 70) -> str:
    """A long held-fixed description broken into lines that fit over a panel."""
    return textwrap.fill(text, width=width, break_long_words=False)


def native_scale(rows: pd.DataFrame, key: str) -> bool:
    """Whether a knob gets a numeric axis (the spacing of its values drawn): only a real-valued knob with several
    values. One value, or whole numbers (depth, width: counts), get one evenly spaced tick per value instead of
    a continuous axis from 2.85 to 3.15 around a single point."""
    values = pd.Series(rows[key].dropna().unique())
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    return bool(numeric and len(values) > 1 and not all(float(value).is_integer() for value in values))


def panel_grid(count: int, per_row: int = 3, width: float = 4.6, height: float = 3.4):
    """`count` panels, at most `per_row` to a row; the unused axes of the last row hidden."""
    columns = max(1, min(count, per_row))
    drawing, axes = new_figure(columns, -(-count // columns), width=width, height=height)
    for axis in axes[count:]:
        axis.set_visible(False)
    return drawing, axes[:count]
