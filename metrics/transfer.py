"""The transfer probe of LearnPhase (Schneider & Prabhushankar, AAAI 2024): a task bound to the splits it reads.

The tasks themselves (colour dominance, brightness, the other dataset's classes) are the registry
in data/transfer.py; `bind` labels a pair of splits with one of them, fitted on the training split
(brightness terciles, the normalisation), and the engine (metrics/engine.py) fits the probe.

    probe = bind(TRANSFER_TASKS["brightness"], train, test, dataset_classes=10)          # the run's images
    probe = bind(task, other_train, other_test, dataset_classes=100, source="cifar100")  # another dataset's
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from data.transfer import COLOURS, PARTNERS, TRANSFER_TASKS, TaskChoice, TransferTask, choose_task

__all__ = ["COLOURS", "PARTNERS", "TRANSFER_TASKS", "TaskChoice", "TransferProbe", "TransferTask", "bind",
           "choose_task"]


@dataclass(frozen=True)
class TransferProbe:
    """A transfer task and the (train, test) splits it reads, each carrying its `transfer_labels`.

    `source` "own": the splits are the run's own (the engine reads them in the same passes as the
    other metrics); otherwise the dataset whose images the probe reads, in passes of their own."""

    task: str
    num_classes: int
    train: object  # metrics.engine.SplitData
    test: object
    source: str = "own"

    @property
    def own(self) -> bool:
        return self.source == "own"


def bind(task: TransferTask, train, test, dataset_classes: int, source: str = "own") -> TransferProbe:
    """The probe of `task` on the splits `train` and `test` (engine.SplitData): both labelled by the
    task's rule fitted on `train`; `dataset_classes` is the number of classes of the dataset read."""
    label = task.labeller(train.images, train.labels, train.mean, train.std)
    labelled = [dataclasses.replace(split, transfer_labels=label(split.images, split.labels)) for split in (train, test)]
    return TransferProbe(task.name, task.classes(dataset_classes), *labelled, source=source)
