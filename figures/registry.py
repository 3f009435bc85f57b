"""The figure registry: `@figure(name, paper)` on a drawing function makes it a plug-in of draw_all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd


class Skip(Exception):
    """A figure that this table cannot feed; the message says why."""


@dataclass(frozen=True)
class FigureSpec:
    name: str
    paper: str
    draw: Callable[..., dict]  # its table (and the read-out) -> {file stem: matplotlib Figure}
    table: str = "metrics"  # which table it is drawn from: metrics.parquet, or similarity.parquet (CKA)
    readout: bool = False  # drawn with the read-out too (findings/readout.py): its turns are the report's
    # table (and read-out) -> the keys of its files, each drawn on its own by draw(..., part=key): a figure of many
    # files (one per run, per six conditions) is shared out among the drawing processes instead of falling to one
    parts: Callable[..., list] | None = None

    def pieces(self, table: pd.DataFrame, readout) -> list:
        """[None] (the figure is drawn at once), or the keys of its parts; Skip when the table cannot feed it."""
        if self.parts is None:
            return [None]
        return self.parts(table, readout) if self.readout else self.parts(table)

    def drawn(self, table: pd.DataFrame, readout, part=None) -> dict:
        """{file stem: matplotlib Figure} of the whole figure (part None) or of one part."""
        options = {} if part is None else {"part": part}
        return self.draw(table, readout, **options) if self.readout else self.draw(table, **options)


FIGURES: dict[str, FigureSpec] = {}


def with_readout(function: Callable) -> Callable:
    """draw(table, readout=None): the table's read-out made here when the caller has none to share."""
    def draw(table: pd.DataFrame, readout=None, **options):
        if readout is None:
            from findings.readout import readout as read_out

            readout = read_out(table)
        return function(table, readout, **options)
    return draw


def figure(name: str, paper: str, table: str = "metrics", readout: bool = False, parts: Callable | None = None):
    """Register a figure plug-in: `@figure("ncc_by_layer", "IntermediateNC Fig. 1")`; table="similarity" for
    one drawn from the similarity table (measuring/snapshots.py); readout=True for one that marks the read-out's
    turns (draw(table, readout): the numbers the report's sentences state); `parts` for one of several files,
    each drawn alone (parts(table[, readout]) -> keys; draw(table[, readout], part=key) -> that part's files)."""
    def register(function):
        draw = with_readout(function) if readout else function
        part_keys = (with_readout(parts) if readout else parts) if parts else None
        FIGURES[name] = FigureSpec(name, paper, draw, table, readout, part_keys)
        return function
    return register
