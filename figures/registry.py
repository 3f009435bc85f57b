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
    draw: Callable[[pd.DataFrame], dict]  # metrics table -> {file stem: matplotlib Figure}


FIGURES: dict[str, FigureSpec] = {}


def figure(name: str, paper: str):
    """Register a figure plug-in: `@figure("ncc_by_layer", "IntermediateNC Fig. 1")`."""
    def register(function):
        FIGURES[name] = FigureSpec(name, paper, function)
        return function
    return register
