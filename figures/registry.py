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


FIGURES: dict[str, FigureSpec] = {}


def with_readout(function: Callable) -> Callable:
    """draw(table, readout=None): the table's read-out made here when the caller has none to share."""
    def draw(table: pd.DataFrame, readout=None) -> dict:
        if readout is None:
            from findings.readout import readout as read_out

            readout = read_out(table)
        return function(table, readout)
    return draw


def figure(name: str, paper: str, table: str = "metrics", readout: bool = False):
    """Register a figure plug-in: `@figure("ncc_by_layer", "IntermediateNC Fig. 1")`; table="similarity" for
    one drawn from the similarity table (metrics/snapshots.py); readout=True for one that marks the read-out's
    turns (draw(table, readout): the numbers the report's sentences state)."""
    def register(function):
        draw = with_readout(function) if readout else function
        FIGURES[name] = FigureSpec(name, paper, draw, table, readout)
        return function
    return register
