"""python analysis.py figures experiment=NAME — every figure of an experiment, drawn from its metrics table only.

    drawn, skipped = draw_all(metrics, out_dir)   # {figure: [paths]}, {figure: why it was not drawn}

Each figure is a plug-in registered by name (`@figure`), taking the tidy metrics table (DESIGN.md
contract 6) and returning matplotlib figures by file stem, or raising `Skip` with the reason (no
such runs in this experiment, a knob that does not vary, ...). Files: `<out_dir>/<stem>.png` (and `.pdf`
with figure_formats=png,pdf), written atomically. Several seeds of one condition are drawn as their mean with
its 97.5 % t-interval over seeds (style.SEED_BAND: the read-out's interval, findings/noise.py).
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
             similarity_table: pd.DataFrame | None = None, readout=None, workers: int = 1,
             formats: tuple[str, ...] = ("png",)) -> tuple[dict, dict]:
    """Draw every registered figure (or `names`) into out_dir, each from its table (the metrics table, or
    `similarity_table`: None when there is none); returns ({name: [paths]}, {name: reason}), in the
    registry's order. A figure that fails is logged with its traceback and reported as skipped with
    "failed: ..." (the others are still drawn; the caller decides the exit code). `readout`: the table's
    read-out (findings/readout.py), made here once when a figure needs it and none is given. `workers` > 1
    draws the figures in that many forked processes (saving a figure is most of its time, and one core's), a
    figure of several parts (FigureSpec.parts) a part to a process. `formats`: the files of each figure
    (style.FORMATS: png, pdf)."""
    chosen = [name for name in FIGURES if names is None or name in names]
    if readout is None and any(FIGURES[name].readout for name in chosen):
        from findings.readout import readout as read_out

        readout = read_out(metrics)
    inputs = {"metrics": metrics, "out_dir": Path(out_dir), "similarity_table": similarity_table, "readout": readout,
              "formats": formats}
    tasks, results = planned(chosen, inputs)
    parts = (in_processes(tasks, inputs, workers) if workers > 1 and len(tasks) > 1 else
             {task: draw_part(task, **inputs) for task in tasks})
    for name in chosen:
        results.setdefault(name, merged([result for task, result in parts.items() if task[0] == name]))
    drawn = {name: results[name][0] for name in chosen if results[name][0] is not None}
    return drawn, {name: results[name][1] for name in chosen if results[name][1] is not None}


def table_of(spec: FigureSpec, metrics: pd.DataFrame, similarity_table) -> pd.DataFrame:
    table = metrics if spec.table == "metrics" else similarity_table
    if table is None:
        raise Skip(f"no {spec.table} table: measure probe snapshots first (cka_previous_layer in metrics=)")
    return table


def planned(names: list[str], inputs: dict) -> tuple[list[tuple], dict]:
    """([(name, part key or None)] to draw, the parts of many-file figures first; {name: (None, why not drawn)}
    for the figures whose table cannot feed them). Largest pieces first: a worker left to draw a many-panel
    figure alone at the end would hold up the report."""
    tasks, results = [], {}
    for name in names:
        spec = FIGURES[name]
        try:
            tasks += [(name, key) for key in spec.pieces(table_of(spec, inputs["metrics"], inputs["similarity_table"]),
                                                         inputs["readout"])]
        except Skip as reason:
            results[name] = None, str(reason)
        except Exception as error:  # a bug in one figure must not cost the others (or the report)
            logger.exception("figure %s failed", name)
            results[name] = None, f"failed: {type(error).__name__}: {error}"
    return sorted(tasks, key=lambda task: task[1] is None), results


def merged(results: list[tuple]) -> tuple:
    """One figure's (paths, None) from its parts' results, or the first part's (None, why not drawn)."""
    failed = next((result for result in results if result[0] is None), None)
    return failed or ([path for paths, _ in results for path in paths], None)


def draw_part(task: tuple, metrics: pd.DataFrame, out_dir: Path, similarity_table, readout, formats) -> tuple:
    """(its saved paths, None) or (None, why it was not drawn) for one registered figure, or one part of one
    (task: (name, part key or None))."""
    import matplotlib.pyplot as pyplot

    name, part = task
    spec = FIGURES[name]
    try:
        figures = spec.drawn(table_of(spec, metrics, similarity_table), readout, part)
    except Skip as reason:
        return None, str(reason)
    except Exception as error:  # a bug in one figure must not cost the others (or the report)
        logger.exception("figure %s failed", name)
        pyplot.close("all")
        return None, f"failed: {type(error).__name__}: {error}"
    paths = []
    for stem, drawing in figures.items():
        paths += save(drawing, out_dir / stem, formats)
        pyplot.close(drawing)
    logger.info("drew %s: %d figure(s)", name, len(figures))  # progress: drawing takes seconds each
    return paths, None


SHARED_INPUTS: dict = {}  # what forked workers draw from: inherited with the process, never pickled


def draw_shared(task: tuple) -> tuple:
    return draw_part(task, **SHARED_INPUTS)


def in_processes(tasks: list[tuple], inputs: dict, workers: int) -> dict:
    """{task: draw_part's result}, drawn by `workers` forked processes (the tables and read-out inherited, not
    copied); a pool that breaks (a worker killed) leaves its figures to this process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    SHARED_INPUTS.update(inputs)
    results = {}
    try:
        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=multiprocessing.get_context("fork")) as pool:
            for task, result in zip(tasks, pool.map(draw_shared, tasks)):
                results[task] = result
    except BrokenProcessPool:
        logger.warning("a figure worker died; drawing the remaining figures here")
    finally:
        SHARED_INPUTS.clear()
    return {task: results.get(task) or draw_part(task, **inputs) for task in tasks}
