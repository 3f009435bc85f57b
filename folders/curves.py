"""tensorboard --logdir outputs/<experiment> — a run's live-curve folder and its event files.

`<experiment>/tensorboard/<run_id>/` holds training's curves (training/curves.py writes them: one event file per
start, cut back to the iteration a start goes on from) and `layers/` the analysis's per-layer metrics
(measuring/curves.py: rewritten whole). The files are written with tensorboard's own record format and protos
(no SummaryWriter: its file names hold the clock and the pid, and TensorBoard reads a run's files in name
order, which must be the order of the starts).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from utils import atomic_write_bytes, describe_environment_error, one_line


class CurvesFolder:
    """`tensorboard/<run_id>/`: one TensorBoard run of training's curves, and `layers/` another, of the
    analysis's per-layer metrics. TensorBoard reads every file whose name holds `tfevents`, in name order:
    the numbers in the names keep that order the order of writing."""

    EVENT_FILES = "events.out.tfevents.*"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.layers_path = self.path / "layers"

    def start_files(self) -> list[Path]:
        """Training's event files, one per start, in the order they were written."""
        return sorted(self.path.glob(self.EVENT_FILES))

    def start_file(self, number: int, iteration: int) -> Path:
        """The event file of the `number`th start of training, which goes on from `iteration`."""
        return self.path / f"events.out.tfevents.{number:06d}.from_{iteration:08d}"

    def layer_files(self) -> list[Path]:
        return sorted(self.layers_path.glob(self.EVENT_FILES))

    def layer_file(self, number: int) -> Path:
        """The `number`th writing of the per-layer metrics (each holds them all; the older ones are removed)."""
        return self.layers_path / f"events.out.tfevents.{number:06d}.layers"

    @staticmethod
    def number_of(path: Path) -> int:
        return int(path.name.split(".")[3])

    @staticmethod
    def staging_file(path: Path) -> Path:
        """Where an event file is written before it is renamed into place: a name without `tfevents`
        (TensorBoard reads every file whose name holds it), unique to the writer."""
        return path.with_name(f".{path.name.replace('tfevents', 'staging')}-{os.getpid()}-{time.monotonic_ns()}")


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
