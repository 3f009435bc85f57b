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
    draw: Callable[[pd.DataFrame], dict]  # its table -> {file stem: matplotlib Figure}
    table: str = "metrics"  # which table it is drawn from: metrics.parquet, or similarity.parquet (CKA)


FIGURES: dict[str, FigureSpec] = {}


def figure(name: str, paper: str, table: str = "metrics"):
    """Register a figure plug-in: `@figure("ncc_by_layer", "IntermediateNC Fig. 1")`; table="similarity" for
    one drawn from the similarity table (metrics/snapshots.py)."""
    def register(function):
        FIGURES[name] = FigureSpec(name, paper, function, table)
        return function
    return register
