"""python analysis.py figures experiment=NAME — every figure of an experiment, drawn from its metrics table only.

    drawn, skipped = draw_all(metrics, out_dir)   # {figure: [paths]}, {figure: why it was not drawn}

Each figure is a plug-in registered by name (`@figure`), taking the tidy metrics table (DESIGN.md
contract 6) and returning matplotlib figures by file stem, or raising `Skip` with the reason (no
such runs in this experiment, a knob that does not vary, ...). Files: `<out_dir>/<stem>.png` and
`.pdf`, written atomically. Several seeds of one condition are drawn as their mean with a 95 %
bootstrap confidence band (seaborn's errorbar=("ci", 95)).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from figures import collapse, collapse_nc, learnphase, plasticity, similarity, transfer  # noqa: F401  (importing a plug-in registers it)
from figures.registry import FIGURES, FigureSpec, Skip, figure  # noqa: F401
from figures.style import save

logger = logging.getLogger(__name__)


def draw_all(metrics: pd.DataFrame, out_dir: Path, names: list[str] | None = None,
             similarity_table: pd.DataFrame | None = None) -> tuple[dict, dict]:
    """Draw every registered figure (or `names`) into out_dir, each from its table (the metrics table, or
    `similarity_table`: None when there is none); returns ({name: [paths]}, {name: reason}).
    A figure that fails is logged with its traceback and reported as skipped with "failed: ..." (the
    others are still drawn; the caller decides the exit code)."""
    import matplotlib.pyplot as pyplot

    drawn, skipped = {}, {}
    for name, spec in FIGURES.items():
        if names is not None and name not in names:
            continue
        table = metrics if spec.table == "metrics" else similarity_table
        try:
            if table is None:
                raise Skip(f"no {spec.table} table: measure probe snapshots first (cka_previous_layer in metrics=)")
            figures = spec.draw(table)
        except Skip as reason:
            skipped[name] = str(reason)
            continue
        except Exception as error:  # a bug in one figure must not cost the others (or the report)
            logger.exception("figure %s failed", name)
            skipped[name] = f"failed: {type(error).__name__}: {error}"
            pyplot.close("all")
            continue
        paths = []
        for stem, drawing in figures.items():
            paths += save(drawing, Path(out_dir) / stem)
            pyplot.close(drawing)
        drawn[name] = paths
        logger.info("drew %s: %d figure(s)", name, len(paths) // 2)  # progress: drawing takes seconds each
    return drawn, skipped
