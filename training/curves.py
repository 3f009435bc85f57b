"""python train.py [key=value ...]; tensorboard --logdir outputs/<experiment> — live curves while a grid runs.

With tensorboard=true (the default; an execution option, never part of the run id) training writes TensorBoard
event files of each run into `<out_dir>/<experiment>/tensorboard/<run_id>/`: `train/loss`, `train/accuracy` and
`train/learning_rate` at every iteration, `test/loss` and `test/accuracy` at every checkpoint, the step being the
iteration (folders/curves.py names the files and writes the events; measuring/curves.py adds the analysis's
per-layer metrics beside them).

What the curves must not cost:
- a host synchronisation: training/loop.py hands over each log flush's records, values already on the host, in the
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

import logging
from pathlib import Path

from conf import Execution
from folders import RunFolder
from folders.curves import append, cut_back, describe_failure, restart_event, scalar_event, version_event

logger = logging.getLogger(__name__)
# log record key -> TensorBoard tag (the part before the slash groups the charts)
TRAIN_TAGS = {"train_loss": "train/loss", "train_accuracy": "train/accuracy", "lr": "train/learning_rate"}
TEST_TAGS = {"test_loss": "test/loss", "test_accuracy": "test/accuracy"}


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
