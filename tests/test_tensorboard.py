"""Live curves (live_curves.py): training's and the analysis's TensorBoard event files, read back with
tensorboard's own reader. A resumed run shows every step once, with an uninterrupted run's values, to a
TensorBoard started afterwards and to one that was already showing the steps the kill left behind."""

import errno
import logging
import signal

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import analysis
import live_curves
import training
from checkpointing import ExperimentFolder, RunFolder
from tests.conftest import only_run_dir, run_cli, tiny_words
from tests.test_resume import checkpoint_digests, digests, kill_at_call, train_until_state

# iterations 1..24, checkpoints at 0, 1, 2, 4, 8, 16, 24; resume states at the checkpoints only (the last aside)
SPARSE_STATES = ["resume_every_seconds=3600"]
QUICK_ANALYSIS = ["probe_dimensions=32", "log_level=WARNING", "figures=false", "progress=off"]


def read_curves(path, *, purge: bool = True, accumulator: EventAccumulator | None = None) -> dict[str, list]:
    """{tag: [(step, value), ...]} of one TensorBoard run folder as tensorboard's EventAccumulator reads it,
    every event kept; `purge=False` ignores restart markers (what is on disk, step by step)."""
    if accumulator is None:
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0}, purge_orphaned_data=purge)
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def as_stored(value) -> float:
    return float(np.float32(value))  # a scalar event holds a float32


def curves_of_log(run_dir) -> dict[str, list]:
    """What the run's log and manifest say, as TensorBoard holds it: train values at every iteration, test
    values at every checkpoint."""
    folder = RunFolder(run_dir)
    log, checkpoints = folder.read_log(), sorted(folder.checkpoint_entries().items())
    curves = {tag: [(record["iteration"], as_stored(record[key])) for record in log]
              for key, tag in live_curves.TRAIN_TAGS.items()}
    curves.update({tag: [(iteration, as_stored(entry[key])) for iteration, entry in checkpoints]
                   for key, tag in live_curves.TEST_TAGS.items()})
    return curves


def curves_folder(out_dir, experiment="default"):
    run_dir = only_run_dir(out_dir, experiment)
    return ExperimentFolder(out_dir / experiment).curves(run_dir.name)


def test_training_writes_every_iteration_and_checkpoint_in_one_file_per_start(tmp_path, tiny_settings, one_thread):
    settings, execution = tiny_settings()
    experiment = ExperimentFolder(tmp_path / "default")
    run = experiment.run(settings.run_id)
    assert training.run(settings, run.path, execution) == "done"
    curves = experiment.curves(settings.run_id)
    assert curves.path == tmp_path / "default" / "tensorboard" / settings.run_id
    assert [path.name for path in curves.start_files()] == ["events.out.tfevents.000001.from_00000000"]
    read = read_curves(curves.path)
    assert read == curves_of_log(run.path)
    assert [step for step, _ in read["train/loss"]] == list(range(1, 25))
    assert [step for step, _ in read["test/accuracy"]] == [0, 1, 2, 4, 8, 16, 24]
    assert read["train/learning_rate"][0] == (1, as_stored(settings.lr))


def test_a_resume_after_a_clean_stop_appends_a_second_file(tmp_path, tiny_settings, monkeypatch, one_thread):
    """Stopped right after the resume state of iteration 12 (tests/test_resume.py's train_until_state), then
    restarted: two files, every step once, the values of a run never stopped."""
    settings, execution = tiny_settings("resume_every_seconds=0")
    reference, stopped = (ExperimentFolder(tmp_path / name) for name in ("reference", "stopped"))
    assert training.run(settings, reference.run(settings.run_id).path, execution) == "done"
    train_until_state(settings, execution, stopped.run(settings.run_id).path, monkeypatch, iteration=12)
    assert training.run(settings, stopped.run(settings.run_id).path, execution) == "done"
    curves = stopped.curves(settings.run_id)
    assert [path.name for path in curves.start_files()] == ["events.out.tfevents.000001.from_00000000",
                                                             "events.out.tfevents.000002.from_00000012"]
    expected = read_curves(reference.curves(settings.run_id).path)
    assert read_curves(curves.path) == read_curves(curves.path, purge=False) == expected


@pytest.mark.slow
def test_sigkill_past_the_last_state_drops_those_steps_and_the_resumed_ones_match(tmp_path):
    """SIGKILLed (tests/test_resume.py's counted kills) at iteration 16 before its resume state is saved,
    after its events were written, with half a record at the end of the file; then killed again in the
    middle of a step before any flush; then restarted. Iterations 9..16 appear once, from the resumed run,
    with an uninterrupted run's values: on disk (a reader that ignores restart markers sees the same) and
    in a TensorBoard that was already showing the killed run's steps 9..16."""
    reference_dir, interrupted_dir = tmp_path / "reference", tmp_path / "interrupted"
    assert run_cli("train.py", tiny_words(reference_dir, *SPARSE_STATES)).returncode == 0
    expected = read_curves(curves_folder(reference_dir).path)
    assert expected == curves_of_log(only_run_dir(reference_dir))
    words = tiny_words(interrupted_dir, *SPARSE_STATES)
    # states at 1, 2, 4, 8: the 5th save (iteration 16) is where the kill lands, its events already written
    assert kill_at_call(words, "checkpointing.RunFolder", "save_resume_state", 5, False) == -signal.SIGKILL
    curves = curves_folder(interrupted_dir)
    (first,) = curves.start_files()
    live = EventAccumulator(str(curves.path), size_guidance={"scalars": 0})
    assert [step for step, _ in read_curves(curves.path, accumulator=live)["train/loss"]] == list(range(1, 17))
    with open(first, "ab") as handle:  # a kill inside a write leaves a record cut short
        handle.write(live_curves.encode([live_curves.scalar_event(17, {"train/loss": 1.0})])[:20])
    # resumed at 8; killed at its 3rd batch (iteration 11), before any flush: its file holds no value
    assert kill_at_call(words, "data.stream.TrainingStream", "batch", 3, False) == -signal.SIGKILL
    final = run_cli("train.py", words)
    assert final.returncode == 0, final.stderr
    assert [path.name for path in curves.start_files()] == ["events.out.tfevents.000001.from_00000000",
                                                             "events.out.tfevents.000003.from_00000008"]
    assert read_curves(curves.path) == read_curves(curves.path, purge=False) == expected
    assert read_curves(curves.path, accumulator=live) == expected  # the restart marker purged 9..16 first
    assert checkpoint_digests(interrupted_dir)[1] == checkpoint_digests(reference_dir)[1]


def test_the_analysis_adds_every_layer_metric_once_and_rewrites_only_when_new(tmp_path):
    out_dir = tmp_path
    assert run_cli("train.py", tiny_words(out_dir, "epochs=1")).returncode == 0
    assert analysis.main([f"out_dir={out_dir}", *QUICK_ANALYSIS, "metrics=ncc_accuracy"]) == 0
    curves = curves_folder(out_dir)
    (written,) = curves.layer_files()
    table = analysis.read_table(out_dir / "default")
    expected = {}
    for row in table.sort_values("iteration").itertuples():
        expected.setdefault(f"layer/{row.metric}/{row.split}/{row.layer}", []).append(
            (row.iteration, as_stored(row.value)))
    read = read_curves(curves.layers_path)
    assert read == expected and len(read) == len(table[["metric", "split", "layer"]].drop_duplicates())
    assert all([step for step, _ in curve] == [0, 1, 2, 4, 8] for curve in read.values())
    assert analysis.main([f"out_dir={out_dir}", *QUICK_ANALYSIS, "metrics=ncc_accuracy"]) == 0
    assert curves.layer_files() == [written]  # nothing new: not rewritten
    assert analysis.main([f"out_dir={out_dir}", *QUICK_ANALYSIS, "metrics=ncc_accuracy,cdnv"]) == 0
    (rewritten,) = curves.layer_files()
    assert rewritten.name == "events.out.tfevents.000002.layers"
    read = read_curves(curves.layers_path)
    assert {tag.split("/")[1] for tag in read} == {"ncc_accuracy", "cdnv"}
    assert all(len(curve) == 5 for curve in read.values())  # each checkpoint once
    assert read_curves(curves.path) == curves_of_log(only_run_dir(out_dir))  # training's run beside it, untouched


def test_tensorboard_false_writes_no_event_file(tmp_path):
    assert run_cli("train.py", tiny_words(tmp_path, "epochs=1", "tensorboard=false")).returncode == 0
    assert analysis.main([f"out_dir={tmp_path}", *QUICK_ANALYSIS, "metrics=ncc_accuracy", "tensorboard=false"]) == 0
    assert not ExperimentFolder(tmp_path / "default").tensorboard_path.exists()
    assert not list(tmp_path.rglob("*tfevents*"))


def warnings_of(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "live_curves" and record.levelno == logging.WARNING]


def test_an_unwritable_curves_folder_is_one_warning_and_training_goes_on(tmp_path, tiny_settings, caplog, one_thread):
    """A file where the tensorboard folder should be: one warning line for the run, one per run the
    analysis measures; both finish, the run bit for bit as one without curves."""
    settings, execution = tiny_settings("epochs=1")
    experiment, plain = ExperimentFolder(tmp_path / "default"), ExperimentFolder(tmp_path / "plain")
    experiment.path.mkdir()
    experiment.tensorboard_path.write_text("in the way\n")
    with caplog.at_level(logging.WARNING, logger="live_curves"):
        assert training.run(settings, experiment.run(settings.run_id).path, execution) == "done"
        (warning,) = warnings_of(caplog)
        assert settings.run_id in warning and "training goes on" in warning and "\n" not in warning
        caplog.clear()
        assert analysis.main([f"out_dir={tmp_path}", *QUICK_ANALYSIS, "metrics=ncc_accuracy"]) == 0
        assert len(warnings_of(caplog)) == 1
    off = tiny_settings("epochs=1", "tensorboard=false")[1]
    assert training.run(settings, plain.run(settings.run_id).path, off) == "done"
    assert digests(experiment.run(settings.run_id)) == digests(plain.run(settings.run_id))
    assert experiment.run(settings.run_id).read_log() == plain.run(settings.run_id).read_log()


def test_a_full_disk_mid_run_is_one_warning_and_the_run_ends_as_without_curves(tmp_path, tiny_settings, caplog,
                                                                               monkeypatch, one_thread):
    """The disk fills at the third write of events: one warning, no event written after it, and the run (a
    folder of its own, outside an experiment: its curves in <run_dir>/tensorboard/) ends bitwise equal."""
    settings, execution = tiny_settings()
    calls, real_append = [0], live_curves.append

    def filling_up(path, events):
        calls[0] += 1
        if calls[0] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_append(path, events)

    monkeypatch.setattr(live_curves, "append", filling_up)
    full = RunFolder(tmp_path / "full")
    with caplog.at_level(logging.WARNING, logger="live_curves"):
        assert training.run(settings, full.path, execution) == "done"
    (warning,) = warnings_of(caplog)
    assert warning.startswith("full: ") and "No space left on device" in warning  # the folder's name: its run id
    assert calls[0] == 3  # given up at the first failure
    assert full.curves().path == full.path / "tensorboard"
    assert set(read_curves(full.curves().path)) == {"test/loss", "test/accuracy"}  # iteration 0's, then full
    monkeypatch.setattr(live_curves, "append", real_append)
    reference = RunFolder(tmp_path / "reference")
    assert training.run(settings, reference.path, tiny_settings("tensorboard=false")[1]) == "done"
    assert digests(full) == digests(reference) and full.read_log() == reference.read_log()
    assert not (reference.path / "tensorboard").exists()
