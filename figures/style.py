"""One look for every figure: seaborn's paper theme, log-scaled iterations, PNG + PDF written atomically."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node or in CI

import matplotlib.pyplot as pyplot  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn  # noqa: E402

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
