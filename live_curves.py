"""python train.py [key=value ...]; tensorboard --logdir outputs/<experiment> — live curves while a grid runs.

With tensorboard=true (the default; an execution option, never part of the run id) training writes TensorBoard
event files of each run into `<out_dir>/<experiment>/tensorboard/<run_id>/`: `train/loss`, `train/accuracy` and
`train/learning_rate` at every iteration, `test/loss` and `test/accuracy` at every checkpoint, the step being the
iteration. `python analysis.py` adds the run's per-layer metrics, `layer/<metric>/<split>/<NNN> <layer>` at every
checkpoint's iteration (NNN: the layer's index in the model, zero-padded, so names sort in the model's order),
into `<run_id>/layers/`, a second TensorBoard run beside it (one writer per run folder: TensorBoard follows every
file of a run only with its Rust data server), with a custom-scalars layout: one chart per metric and split, a
line per layer (layout_event); rows measured under other analysis options (their `options`, metrics/store.py)
in charts of their own, `layer/<metric>/<split>/<options>`. Folders and file names:
checkpointing.CurvesFolder. Written with tensorboard's own record format and protos (no SummaryWriter: its file
names hold the clock and the pid, and TensorBoard reads a run's files in name order, which must be the order of
the starts).

What the curves must not cost:
- a host synchronisation: training.py hands over each log flush's records, values already on the host, in the
  batches the log gets them (LOG_FLUSH_EVERY steps, and at every checkpoint); nothing is written per step;
- exact resume: each start of a run writes its own event file, and first cuts every earlier one back to the
  iteration it goes on from (the log is cut back there too: every step appears once, with the values of an
  uninterrupted run); the cut is an atomic rewrite, which also drops a record a kill left half-written. Each
  file opens with TensorBoard's restart marker, SessionLog START at the first step it writes (what
  SummaryWriter(purge_step=...) writes): a TensorBoard that already shows the dropped steps discards them then
  (event_accumulator purges every step >= the marker's), and a fresh one finds nothing to discard;
- the run itself: a failure to write (an unwritable folder, a full disk) is one warning line, and the run goes
  on without curves until its next start.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import time
from pathlib import Path

from checkpointing import CurvesFolder, ExperimentFolder, RunFolder
from conf import Execution
from utils import atomic_write_bytes, describe_environment_error, one_line

logger = logging.getLogger(__name__)
# log record key -> TensorBoard tag (the part before the slash groups the charts)
TRAIN_TAGS = {"train_loss": "train/loss", "train_accuracy": "train/accuracy", "lr": "train/learning_rate"}
TEST_TAGS = {"test_loss": "test/loss", "test_accuracy": "test/accuracy"}
# layer/<metric>/<split>[/<options>]: one chart; an empty part is left out (the default analysis options' rows)
LAYER_CHART_PARTS = ("metric", "split", "options")
LAYER_INDEX_DIGITS = 3  # at least: 416 layers sort as 000..415; a model of 1000 or more gets as many digits as it needs


class CurvesRunFolder(RunFolder):
    """The run folder training writes (training.run), whose log is also written as live curves: cut back
    with it on every start (truncate_log, once the start knows its iteration), extended with it at every
    log flush (append_log: the train values), and a checkpoint's test values with the checkpoint."""

    def __init__(self, path: str | Path, execution: Execution):
        super().__init__(path)
        self.execution, self.live = execution, None

    def truncate_log(self, iteration: int) -> None:
        super().truncate_log(iteration)
        self.live = TrainingCurves(self, self.execution, iteration)

    def append_log(self, records: list[dict]) -> None:
        super().append_log(records)
        if self.live is not None:
            self.live.write(records, TRAIN_TAGS)

    def save_checkpoint(self, **checkpoint) -> None:
        super().save_checkpoint(**checkpoint)
        if self.live is not None:
            self.live.write([{"iteration": checkpoint["iteration"], **checkpoint["metrics"]}], TEST_TAGS)


class TrainingCurves:
    """One start's event file of a run's training curves. Does nothing with tensorboard=false, or once a
    write failed (said in one warning line)."""

    def __init__(self, folder: RunFolder, execution: Execution, iteration: int):
        """Cut the earlier starts' files back to `iteration` (the one this start goes on from) and open this one's."""
        self.run_id, self.path = folder.run_id, None
        if not execution.tensorboard:
            return
        try:
            curves = folder.curves()
            number = cut_back(curves, iteration) + 1
            path = curves.start_file(number, iteration)
            path.parent.mkdir(parents=True, exist_ok=True)
            append(path, [version_event(), restart_event(iteration + 1)])
            self.path = path
        except Exception as error:  # noqa: BLE001 - whatever the curves meet, the run goes on
            self.give_up(error)

    def write(self, records: list[dict], tags: dict[str, str]) -> None:
        """One event per record (its iteration the step) of the values named in `tags` (record key -> tag)."""
        if self.path is None or not records:
            return
        try:
            append(self.path, [scalar_event(record["iteration"], {tag: record[key] for key, tag in tags.items()
                                                                  if key in record}) for record in records])
        except Exception as error:  # noqa: BLE001 - a full disk, the folder gone: the run goes on
            self.give_up(error)

    def give_up(self, error: Exception) -> None:
        self.path = None
        logger.warning("%s: no live curves (tensorboard=true) until the run's next start: %s; training goes on",
                       self.run_id, describe_failure(error))


def update_layer_curves(experiment: ExperimentFolder, run_id: str, execution: Execution, measured: int) -> None:
    """Write a run's per-layer metrics, every current row of its part of the table, as one new event file (the
    older ones removed) when this call `measured` checkpoints of it, or its cells are newer than its curves,
    or it has none yet. A failure is one warning line: the metrics are measured all the same."""
    if not execution.tensorboard:
        return
    from metrics import store  # the rows as the table's merge builds them
    from metrics.layout import StoreLayout

    curves = experiment.curves(run_id)
    try:
        written, cells = curves.layer_files(), StoreLayout(experiment).run_cell_paths(run_id)
        newest_cell = max((cell.stat().st_mtime_ns for cell in cells), default=None)
        if newest_cell is None or (written and not measured and newest_cell <= written[-1].stat().st_mtime_ns):
            return
        table = store.run_rows(experiment, run_id)
        if table is not None:
            write_layer_curves(curves, table.to_pylist())
    except Exception as error:  # noqa: BLE001 - the table and cells are written; the curves are a view of them
        logger.warning("%s: per-layer live curves not written (tensorboard=true): %s", run_id, describe_failure(error))


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


# -- event files: tensorboard's records and protos ------------------------------------------------------

def version_event():
    """The header every event file starts with; version 2 makes TensorBoard honour restart markers."""
    from tensorboard.compat.proto import event_pb2

    return event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")


def restart_event(step: int):
    """SessionLog START at `step`: a reader discards the steps >= `step` it read before (SummaryWriter's purge_step)."""
    from tensorboard.compat.proto import event_pb2

    return event_pb2.Event(wall_time=time.time(), step=step,
                           session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))


def scalar_event(step: int, values: dict[str, float]):
    from tensorboard.compat.proto import event_pb2, summary_pb2

    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)
                                         for tag, value in values.items()])
    return event_pb2.Event(wall_time=time.time(), step=step, summary=summary)


def encode(events: list) -> bytes:
    """Events as TFRecords (length, its crc, the proto, its crc), as TensorBoard reads them."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    buffer = io.BytesIO()
    writer = RecordWriter(buffer)
    for event in events:
        writer.write(event if isinstance(event, bytes) else event.SerializeToString())
    return buffer.getvalue()


def append(path: Path, events: list) -> None:
    """Whole records at the end of an event file (one write: a kill leaves at most the last one cut short)."""
    payload = encode(events)
    with open(path, "ab") as handle:
        handle.write(payload)


def read_records(path: Path) -> list[tuple[int, bool, bytes]]:
    """(step, holds values, the serialized event) of every whole record of an event file, read with
    tensorboard's own loader, which stops before a record cut short."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    events = [(event_pb2.Event.FromString(raw), raw) for raw in RawEventFileLoader(str(path)).Load()]
    return [(event.step, event.HasField("summary"), raw) for event, raw in events]


def cut_back(curves: CurvesFolder, iteration: int) -> int:
    """Keep the steps up to `iteration` in every earlier start's event file: rewritten atomically when that
    drops a record (or one a kill cut short), removed when no value is left. The number of the latest start."""
    files = curves.start_files()
    for path in files:
        records = read_records(path)
        kept = [raw for step, _, raw in records if step <= iteration]
        if not any(values for step, values, _ in records if step <= iteration):
            path.unlink()
        elif len(kept) < len(records) or sum(16 + len(raw) for raw in kept) != path.stat().st_size:
            replace_atomically(curves, path, kept)  # 16: a record's length, footer and two crcs
    return max(map(CurvesFolder.number_of, files), default=0)


def replace_atomically(curves: CurvesFolder, path: Path, events: list) -> None:
    """utils.atomic_write_bytes under a staging name without `tfevents` (TensorBoard reads every file whose
    name holds it, a half-written temporary too), then renamed into place."""
    staging = curves.staging_file(path)
    try:
        atomic_write_bytes(staging, encode(events))
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def describe_failure(error: Exception) -> str:
    if isinstance(error, OSError):
        return describe_environment_error(error)
    return f"{type(error).__name__}: {one_line(error)}"
