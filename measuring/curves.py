"""python analysis.py [key=value ...]; tensorboard --logdir outputs/<experiment> — the per-layer metrics as live curves.

With tensorboard=true `python analysis.py` adds each run's per-layer metrics, `layer/<metric>/<split>/<NNN> <layer>`
at every checkpoint's iteration (NNN: the layer's index in the model, zero-padded, so names sort in the model's
order), into `<run_id>/layers/`, a second TensorBoard run beside training's (one writer per run folder:
TensorBoard follows every file of a run only with its Rust data server), with a custom-scalars layout: one chart
per metric and split, a line per layer (layout_event); rows measured under other analysis options (their
`options`, measuring/store.py) in charts of their own, `layer/<metric>/<split>/<options>`. Folders, file names
and the event format: folders/curves.py.
"""

from __future__ import annotations

import logging
import math
import re
import time

from conf import Execution
from folders import RunRecord
from folders.curves import (
    CurvesFolder,
    describe_failure,
    replace_atomically,
    restart_event,
    scalar_event,
    version_event,
)
from measuring.layout import StoreLayout
from measuring import store  # the rows as the table's merge builds them

logger = logging.getLogger(__name__)
# layer/<metric>/<split>[/<options>]: one chart; an empty part is left out (the default analysis options' rows)
LAYER_CHART_PARTS = ("metric", "split", "options")
LAYER_INDEX_DIGITS = 3  # at least: 416 layers sort as 000..415; a model of 1000 or more gets as many digits as it needs


def update_layer_curves(layout: StoreLayout, run: RunRecord, execution: Execution, measured: int) -> None:
    """Write a run's per-layer metrics, every current row of its part of the table (store.run_rows, from the
    run's record as this call read it), as one new event file (the older ones removed) when this call `measured`
    checkpoints of it, or its cells are newer than its curves, or it has none yet. A failure is one warning line:
    the metrics are measured all the same."""
    if not execution.tensorboard:
        return
    try:
        written, cells = run.curves.layer_files(), layout.run_cell_paths(run.run_id)
        newest_cell = max((cell.stat().st_mtime_ns for cell in cells), default=None)
        if newest_cell is None or (written and not measured and newest_cell <= written[-1].stat().st_mtime_ns):
            return
        table = store.run_rows(layout, run.run_id, run)
        if table is not None:
            write_layer_curves(run.curves, table.to_pylist())
    except Exception as error:  # noqa: BLE001 - the table and cells are written; the curves are a view of them
        logger.warning("%s: per-layer live curves not written (tensorboard=true): %s", run.run_id,
                       describe_failure(error))


def write_layer_curves(curves: CurvesFolder, rows: list[dict]) -> None:
    """Write the run's rows (all of them: each file holds every curve) as its next per-layer event file and
    remove the older ones. The file opens with a restart marker at step 0 and starts again there: a
    TensorBoard that was showing the older file discards all it read of it, so a rewrite never shows a point
    twice (its default Rust data server follows the new file; its Python loader only once restarted)."""
    written = curves.layer_files()
    number = 1 + max(map(CurvesFolder.number_of, written), default=0)
    replace_atomically(curves, curves.layer_file(number), [version_event(), restart_event(0), *layer_events(rows)])
    for old in written:
        old.unlink(missing_ok=True)


def layer_events(rows: list[dict]) -> list:
    """The custom-scalars layout of the rows' charts, then one event per checkpoint iteration holding that
    iteration's finite per-layer values, in the model's layer order."""
    digits = max([LAYER_INDEX_DIGITS, *(len(str(index)) for row in rows if (index := layer_index(row)) is not None)])
    charts: dict[str, str] = {}  # chart -> its metric, in the rows' order (the table's: the registry's, then splits)
    values_at: dict[int, dict[str, float]] = {}
    for row in rows:
        value = row.get("value")
        if value is None or not math.isfinite(value):
            continue
        chart = layer_chart(row)
        charts.setdefault(chart, str(row.get("metric") or ""))
        tag = "/".join(part for part in (chart, layer_line(row, digits)) if part)
        values_at.setdefault(int(row["iteration"]), {})[tag] = value
    return [layout_event(charts), *(scalar_event(iteration, dict(sorted(values.items())))
                                    for iteration, values in sorted(values_at.items()))]


def layer_chart(row: dict) -> str:
    """`layer/<metric>/<split>[/<options>]`: the tag of a row without its layer, the title of the chart it is a line
    of (the options words of a row measured under other analysis options than the defaults)."""
    return "/".join(["layer", *(str(row[part]) for part in LAYER_CHART_PARTS if row.get(part))])


def layer_line(row: dict, digits: int) -> str:
    """`<NNN> <layer>`: the layer's index in the model zero-padded in front, so that TensorBoard, which sorts
    tags as text, lists features.2 before features.10; the name alone for a row of no model layer (`all`)."""
    layer, index = str(row.get("layer") or ""), layer_index(row)
    return layer if index is None or not layer else f"{index:0{digits}d} {layer}"


def layer_index(row: dict) -> int | None:
    """The row's layer_index (its position in model.layer_names()); None when it names no model layer (-1)."""
    index = row.get("layer_index")
    return int(index) if index is not None and index >= 0 else None


def layout_event(charts: dict[str, str]):
    """The custom-scalars layout (tensorboard's "Custom Scalars" tab): a category per metric holding one
    multiline chart per split, whose lines are the tags under the chart's own (the regex `^<chart>/[^/]+$`:
    every layer of every run shown, never another split's). A regex rather than the list of a run's tags
    keeps every run's layout the same, so TensorBoard's merge of the runs' layouts (by category title,
    identical charts once) shows one chart per metric and split in a grid of models of different depths."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    categories: dict[str, list] = {}
    for chart, metric in charts.items():
        content = layout_pb2.MultilineChartContent(tag=[f"^{re.escape(chart)}/[^/]+$"])
        categories.setdefault(f"layer/{metric}", []).append(layout_pb2.Chart(title=chart, multiline=content))
    layout = layout_pb2.Layout(category=[layout_pb2.Category(title=title, chart=chart_list)
                                         for title, chart_list in categories.items()])
    tensor = tensor_pb2.TensorProto(dtype="DT_STRING", string_val=[layout.SerializeToString()],
                                    tensor_shape=tensor_shape_pb2.TensorShapeProto())
    value = summary_pb2.Summary.Value(tag=metadata.CONFIG_SUMMARY_TAG, tensor=tensor,
                                      metadata=metadata.create_summary_metadata())
    return event_pb2.Event(wall_time=time.time(), step=0, summary=summary_pb2.Summary(value=[value]))
