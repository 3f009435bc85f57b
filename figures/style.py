"""One look for every figure: seaborn's paper theme, log-scaled iterations, PNG (and PDF) written atomically, and
the condition groups every figure draws apart.

    for fixed, rows in condition_groups(metrics, plotted=("depth",)):   # one panel per condition, depth as hue
        ...; titled(axis, fixed)                                    # what it holds fixed, wrapped to fit

Panels that compare arms of one quantity share its axis (`shared`); legends sit beside the data
(`legend_outside`); titles wrap to the width of what they sit over (`titled`, `fitted`).
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node or in CI

import matplotlib.pyplot as pyplot  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn  # noqa: E402

from findings.noise import seed_band  # noqa: E402
from findings.conditions import (POOLED, SETTINGS, grouping_keys, condition_column,  # noqa: E402, F401  (one owner)
                              setting_words, settings_of, staged, transferred, varying)
from utils import atomic_write_bytes  # noqa: E402

seaborn.set_theme(context="paper", style="whitegrid", font_scale=1.1)
ITERATION_LABEL = "training iteration (log scale; 0 at the left)"
CHARACTER_EM = 0.6  # mean width of a settings description's characters in DejaVu Sans (~0.55 em), rounded up
# Of its column's width, what a panel's title may take: constrained layout keeps a title inside its column by
# squeezing the axes, so a title as wide as the column would leave no room for the data.
PANEL_SHARE = 0.8
LEGEND_WIDTH = 2.0  # inches: a legend entry's lines beside a panel
PANEL_EXTRAS = 1.6  # inches of a panel's row besides a legend hung beside it: title, tick labels, x label
# The files a figure is saved as (figure_formats=): the PNG the report shows, a PDF for papers on request (it
# doubles the drawing time of the demo's figures: benchmarks/readout_cost.py).
FORMATS = {"png": {"dpi": 150}, "pdf": {}}
SEED_BAND = seed_band  # mean over seeds with its t-interval: the read-out's (findings/noise.py), not a bootstrap


def iteration_axis(axis) -> None:
    """Iterations on a log scale that still shows iteration 0 (symlog: linear below 1)."""
    axis.set_xscale("symlog", linthresh=1)
    axis.set_xlim(left=0)
    x_labelled(axis, ITERATION_LABEL)


def fitted(text: str, over, fontsize: float) -> str:
    """Wrap `text` (a title, a label) to the width of what it sits over at `fontsize` points: a panel (an
    Axes), a whole figure (a Figure: its suptitle) or a width in inches; its own line breaks kept. Text wider
    than that is cut off at both edges of the saved file."""
    characters = int(room(over) * 72 / (fontsize * CHARACTER_EM))
    return "\n".join(textwrap.fill(line, max(characters, 12), break_long_words=False) for line in text.split("\n"))


def room(over) -> float:
    """The inches a line of text may take over a figure (its width less the layout's padding) or over a panel
    (PANEL_SHARE of its columns' share of the figure's width: the rest is its tick labels and legend)."""
    if isinstance(over, (int, float)):
        return over
    if isinstance(over, Figure):
        return over.get_figwidth() * 0.95
    spec = over.get_subplotspec()
    span = spec.colspan.stop - spec.colspan.start
    return over.figure.get_figwidth() * span / spec.get_gridspec().ncols * PANEL_SHARE


def titled(over, text: str, fontsize: float = 8):
    """Title a panel (an Axes) or a figure (its suptitle) with `text` wrapped to fit over it (`fitted`)."""
    text = fitted(text, over, fontsize)
    if isinstance(over, Figure):
        return over.suptitle(text, fontsize=fontsize)
    return over.set_title(text, fontsize=fontsize)


def x_labelled(axis, text: str) -> None:
    """Label a panel's x axis with `text` wrapped to the panel's width (`fitted`): constrained layout makes no
    room for an x label wider than its axes, so a long one is cut off at the figure's edges."""
    points = FontProperties(size=matplotlib.rcParams["axes.labelsize"]).get_size_in_points()
    axis.set_xlabel(fitted(text, axis, points))


def shared(axes, x: bool = False, y: bool = False) -> None:
    """The panels `axes` on one x and/or y range (and scale), before anything is drawn on them: arms drawn side
    by side compare by height, not by each panel's own fitted range. Every panel keeps its tick labels."""
    first, *rest = axes
    for axis in rest:
        if x:
            axis.sharex(first)
        if y:
            axis.sharey(first)


def legend_outside(axis, **options) -> None:
    """The axis's legend to the right of its data area (constrained layout makes room), never over the curves:
    its entries wrapped to LEGEND_WIDTH (a condition description would squeeze the panel to nothing), the figure
    made taller where the legend is taller than its panel (`room_for`)."""
    handles, labels = axis.get_legend_handles_labels()
    legend = axis.legend(handles, [fitted(label, LEGEND_WIDTH, 7) for label in labels], fontsize=7, title_fontsize=7,
                         loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **options)
    room_for(legend, axis)


def room_for(legend, axis) -> None:
    """Make `axis`'s figure tall enough that `legend`, hung from the top of the panel, ends above the figure's
    bottom edge: each row of panels as tall as the legend and its title and x label (PANEL_EXTRAS)."""
    drawing = axis.figure
    inches = legend.get_window_extent(drawing.canvas.get_renderer()).height / drawing.dpi
    rows = axis.get_subplotspec().get_gridspec().nrows
    drawing.set_figheight(max(drawing.get_figheight(), rows * (inches + PANEL_EXTRAS)))


def legend_below(drawing, axis, title: str, columns: int = 3, fontsize: float = 7) -> None:
    """Move `axis`'s legend under every panel of `drawing`, for entries too long to sit beside one panel
    (condition descriptions): in `columns` columns, each entry wrapped to a column's width, the figure made
    taller by the legend's height so the panels keep theirs."""
    handles, labels = axis.get_legend_handles_labels()
    if axis.get_legend():
        axis.get_legend().remove()
    columns = max(1, min(columns, len(labels)))
    labels = [fitted(label, drawing.get_figwidth() / columns * 0.85, fontsize) for label in labels]
    legend = drawing.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize=fontsize,
                            title=title, title_fontsize=fontsize)
    inches = legend.get_window_extent(drawing.canvas.get_renderer()).height / drawing.dpi
    drawing.set_figheight(drawing.get_figheight() + inches)


def heatmap(axis, grid: pd.DataFrame, cmap: str, label: str, vmin=None, vmax=None) -> None:
    """`grid` (rows × columns, first row at the top) as coloured cells with every row and column labelled and a
    colour bar named `label`. Not seaborn.heatmap: it draws the whole figure once per call to check whether
    its tick labels overlap, most of a figure's time (the CKA figures: 2.2 of 2.5 s)."""
    mesh = axis.pcolormesh(grid.to_numpy(dtype=float), cmap=cmap, vmin=vmin, vmax=vmax)
    axis.set_xlim(0, grid.shape[1])
    axis.set_ylim(grid.shape[0], 0)
    axis.set_xticks([column + 0.5 for column in range(grid.shape[1])], [str(value) for value in grid.columns],
                    rotation=90, fontsize=7)
    axis.set_yticks([row + 0.5 for row in range(grid.shape[0])], [str(value) for value in grid.index], fontsize=7)
    axis.grid(False)
    axis.figure.colorbar(mesh, ax=axis, label=label)


def new_figure(columns: int = 1, rows: int = 1, width: float = 4.6, height: float = 3.4):
    """A figure of rows x columns panels (constrained layout) and its axes, flattened row by row."""
    figure, axes = pyplot.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False,
                                   constrained_layout=True)
    return figure, axes.ravel()


def save(figure, stem: Path, formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """`stem`.png (150 dpi), and `stem`.pdf when `formats` holds pdf, each written to a temporary name and
    renamed."""
    paths = []
    for suffix in formats:
        buffer = io.BytesIO()
        figure.savefig(buffer, format=suffix, **FORMATS[suffix])
        # the layout the PNG was drawn with holds for the PDF (figure fractions, text in points): laying it out
        # again would cost the PDF a second measuring draw, a third of its time
        figure.set_layout_engine("none")
        path = stem.parent / f"{stem.name}.{suffix}"  # not with_suffix: stems hold values like 0.2
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


# -- conditions: what a figure holds fixed ---------------------------------------------------------------------

# What a one-condition figure names when nothing varies: enough to tell it from another experiment's figure (a size
# the arch does not take left out, a training setting an imported run was not told said `unknown`).
SUMMARY = ("dataset", "arch", "depth", "width", "optimizer", "lr", "epochs")


def condition_groups(rows: pd.DataFrame, plotted=(), pooled=POOLED, also=()) -> list[tuple[str, pd.DataFrame]]:
    """[(what the group holds fixed, its rows)], one group per combination of every setting that varies among
    `rows` besides `plotted` and `pooled` (grouping_keys), sorted by those values. A figure draws each group in
    its own panel (or figure) and titles it with the description, so no line pools two conditions (two widths,
    optimizers or data sizes read as one curve). With a single condition, the description names its SUMMARY. Null is
    a value of its own (`varying`): an imported run of unknown lr is never grouped with a trained run's lr."""
    keys = grouping_keys(rows, plotted, pooled, also)
    if rows.empty or not keys:
        summary = [key for key in SUMMARY if key in rows and key not in plotted]
        return [(setting_words(rows.iloc[0], summary) if len(rows) else "no runs", rows)]
    return [(setting_words(part.iloc[0], keys), part)
            for _, part in rows.groupby([condition_column(rows, key) for key in keys], sort=True, dropna=False)]


def wrapped(text: str, width: int = 70) -> str:
    """A long held-fixed description broken into lines of `width` characters (a legend entry); a title fits
    the width of what it sits over instead: `fitted`, `titled`."""
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
