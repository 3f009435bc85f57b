"""Live curves (training/curves.py, measuring/curves.py, folders/curves.py): training's and the analysis's TensorBoard event files, read back with
tensorboard's own reader. A resumed run shows every step once, with an uninterrupted run's values, to a
TensorBoard started afterwards and to one that was already showing the steps the kill left behind."""

import errno
import json
import logging
import signal

import numpy as np
import pytest
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.context import RequestContext
from tensorboard.plugins.base_plugin import TBContext
from tensorboard.plugins.custom_scalar.custom_scalars_plugin import CustomScalarsPlugin
from tensorboard.plugins.scalar.scalars_plugin import ScalarsPlugin

import analysis
from folders import ExperimentFolder, RunFolder
from folders.curves import CurvesFolder, encode, scalar_event
from measuring.curves import write_layer_curves
from tests.conftest import only_run_dir, tiny_words
from tests.test_resume import checkpoint_digests, digests, kill_server, train_until_state
from training import curves as training_curves
from training import loop

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


def custom_scalars(logdir) -> dict[str, dict[str, dict[str, list]]]:
    """{chart title: {run: {line tag: [(step, value), ...]}}} of every chart of TensorBoard's Custom Scalars tab,
    served by tensorboard's own plugin: the runs' layouts merged, each chart's regexes joined and matched
    against each run's tags as its page asks for them."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    plugins = {}
    context = TBContext(logdir=str(logdir), data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(logdir)),
                        multiplexer=multiplexer, plugin_name_to_instance=plugins)
    plugins["scalars"], plugin, request = ScalarsPlugin(context), CustomScalarsPlugin(context), RequestContext()
    layout, charts = plugin.layout_impl(request, ""), {}  # the layout as JSON text; {} when there is none
    for category in json.loads(layout).get("category", []) if layout else []:
        for chart in category["chart"]:
            regexes = chart["multiline"]["tag"]
            tag_filter = regexes[0] if len(regexes) == 1 else "|".join(f"({regex})" for regex in regexes)
            assert chart["title"] not in charts, f"two charts titled {chart['title']}"
            charts[chart["title"]] = {
                run: {tag: [(step, value) for _, step, value in events] for tag, events in matched.items()}
                for run in sorted(multiplexer.Runs())
                if (matched := plugin.scalars_impl(request, run, tag_filter, "")["tag_to_events"])}
    return charts


def as_stored(value) -> float:
    return float(np.float32(value))  # a scalar event holds a float32


def curves_of_log(run_dir) -> dict[str, list]:
    """What the run's log and manifest say, as TensorBoard holds it: train values at every iteration, test
    values at every checkpoint."""
    folder = RunFolder(run_dir)
    log = [json.loads(line) for line in folder.log_path.read_text().splitlines()]
    checkpoints = sorted(folder.checkpoint_entries().items())
    curves = {tag: [(record["iteration"], as_stored(record[key])) for record in log]
              for key, tag in training_curves.TRAIN_TAGS.items()}
    curves.update({tag: [(iteration, as_stored(entry[key])) for iteration, entry in checkpoints]
                   for key, tag in training_curves.TEST_TAGS.items()})
    return curves


def curves_folder(out_dir, experiment="default"):
    run_dir = only_run_dir(out_dir, experiment)
    return ExperimentFolder(out_dir / experiment).curves(run_dir.name)


def test_training_writes_every_iteration_and_checkpoint_in_one_file_per_start(tmp_path, tiny_settings, one_thread):
    settings, execution = tiny_settings()
    experiment = ExperimentFolder(tmp_path / "default")
    run = experiment.run(settings.run_id)
    assert loop.run(settings, run.path, execution) == "done"
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
    assert loop.run(settings, reference.run(settings.run_id).path, execution) == "done"
    train_until_state(settings, execution, stopped.run(settings.run_id).path, monkeypatch, iteration=12)
    assert loop.run(settings, stopped.run(settings.run_id).path, execution) == "done"
    curves = stopped.curves(settings.run_id)
    assert [path.name for path in curves.start_files()] == ["events.out.tfevents.000001.from_00000000",
                                                             "events.out.tfevents.000002.from_00000012"]
    expected = read_curves(reference.curves(settings.run_id).path)
    assert read_curves(curves.path) == read_curves(curves.path, purge=False) == expected


@pytest.mark.slow
def test_sigkill_past_the_last_state_drops_those_steps_and_the_resumed_ones_match(tmp_path, in_process):
    """SIGKILLed (tests/test_resume.py's counted kills) at iteration 16 before its resume state is saved,
    after its events were written, with half a record at the end of the file; then killed again in the
    middle of a step before any flush; then restarted. Iterations 9..16 appear once, from the resumed run,
    with an uninterrupted run's values: on disk (a reader that ignores restart markers sees the same) and
    in a TensorBoard that was already showing the killed run's steps 9..16."""
    reference_dir, interrupted_dir = tmp_path / "reference", tmp_path / "interrupted"
    assert in_process("train.py", tiny_words(reference_dir, *SPARSE_STATES)).returncode == 0
    expected = read_curves(curves_folder(reference_dir).path)
    assert expected == curves_of_log(only_run_dir(reference_dir))
    words = tiny_words(interrupted_dir, *SPARSE_STATES)
    with kill_server() as kill:  # both killed processes forked from one interpreter
        # states at 1, 2, 4, 8: the 5th save (iteration 16) is where the kill lands, its events already written
        assert kill(words, "folders.RunFolder", "save_resume_state", 5, False) == -signal.SIGKILL
        curves = curves_folder(interrupted_dir)
        (first,) = curves.start_files()
        live = EventAccumulator(str(curves.path), size_guidance={"scalars": 0})
        assert [step for step, _ in read_curves(curves.path, accumulator=live)["train/loss"]] == list(range(1, 17))
        with open(first, "ab") as handle:  # a kill inside a write leaves a record cut short
            handle.write(encode([scalar_event(17, {"train/loss": 1.0})])[:20])
        # resumed at 8; killed at its 3rd batch (iteration 11), before any flush: its file holds no value
        assert kill(words, "data.stream.TrainingStream", "batch", 3, False) == -signal.SIGKILL
    final = in_process("train.py", words)  # a restart in another process than the killed ones
    assert final.returncode == 0, final.stderr
    assert [path.name for path in curves.start_files()] == ["events.out.tfevents.000001.from_00000000",
                                                             "events.out.tfevents.000003.from_00000008"]
    assert read_curves(curves.path) == read_curves(curves.path, purge=False) == expected
    assert read_curves(curves.path, accumulator=live) == expected  # the restart marker purged 9..16 first
    assert checkpoint_digests(interrupted_dir)[1] == checkpoint_digests(reference_dir)[1]


def test_the_analysis_adds_every_layer_metric_once_and_rewrites_only_when_new(tmp_path, in_process):
    out_dir = tmp_path
    assert in_process("train.py", tiny_words(out_dir, "epochs=1")).returncode == 0
    assert analysis.main([f"out_dir={out_dir}", *QUICK_ANALYSIS, "metrics=ncc_accuracy"]) == 0
    curves = curves_folder(out_dir)
    (written,) = curves.layer_files()
    table = analysis.read_table(out_dir / "default")
    expected = {}
    for row in table.sort_values("iteration").itertuples():
        expected.setdefault(f"layer/{row.metric}/{row.split}/{row.layer_index:03d} {row.layer}", []).append(
            (row.iteration, as_stored(row.value)))
    read = read_curves(curves.layers_path)
    assert read == expected and len(read) == len(table[["metric", "split", "layer"]].drop_duplicates())
    assert all([step for step, _ in curve] == [0, 1, 2, 4, 8] for curve in read.values())
    layers_run = f"{only_run_dir(out_dir).name}/layers"  # one chart per split, a line per layer of the run
    assert custom_scalars(out_dir / "default" / "tensorboard") == {
        title: {layers_run: {tag: curve for tag, curve in read.items() if tag.startswith(f"{title}/")}}
        for title in (f"layer/ncc_accuracy/{split}" for split in table["split"].unique())}
    assert analysis.main([f"out_dir={out_dir}", *QUICK_ANALYSIS, "metrics=ncc_accuracy"]) == 0
    assert curves.layer_files() == [written]  # nothing new: not rewritten
    assert analysis.main([f"out_dir={out_dir}", *QUICK_ANALYSIS, "metrics=ncc_accuracy,cdnv"]) == 0
    (rewritten,) = curves.layer_files()
    assert rewritten.name == "events.out.tfevents.000002.layers"
    read = read_curves(curves.layers_path)
    assert {tag.split("/")[1] for tag in read} == {"ncc_accuracy", "cdnv"}
    assert all(len(curve) == 5 for curve in read.values())  # each checkpoint once
    assert read_curves(curves.path) == curves_of_log(only_run_dir(out_dir))  # training's run beside it, untouched


def layer_rows(layers: list[str], iterations, metrics=("ncc_accuracy", "cdnv"), splits=("train", "test")):
    """Rows of the metrics table for a model of `layers` (its layer_names order), every checkpoint, metric and
    split, each value telling its layer, checkpoint and split apart; with effective_depth's row of layer `all`."""
    rows = [{"iteration": iteration, "metric": metric, "split": split, "layer": layer, "layer_index": index,
             "value": index + iteration / 100 + splits.index(split) / 1000}
            for iteration in iterations for metric in metrics for split in splits for index, layer in enumerate(layers)]
    return rows + [{"iteration": iteration, "metric": "effective_depth", "split": "train", "layer": "all",
                    "layer_index": -1, "value": 2.0} for iteration in iterations]


def vgg_layers(blocks: int) -> list[str]:
    return ["input", *(f"features.{number}" for number in range(blocks)), "logits"]


def layers_in_tag_order(lines: dict[str, list]) -> list[str]:
    """The layer names of a chart's lines in the order TensorBoard lists tags: sorted as text."""
    return [tag.rsplit("/", 1)[1].split(" ", 1)[1] for tag in sorted(lines)]


def test_each_metric_and_split_is_one_chart_with_a_line_per_layer_in_the_models_order(tmp_path):
    """A grid of two depths (14 and 5 layers): one chart per metric and split in the Custom Scalars tab,
    each with a line per layer of each run; the lines' tags, sorted as TensorBoard sorts tags (as text),
    come in the model's order, features.2 before features.10."""
    deep, shallow = CurvesFolder(tmp_path / "deep"), CurvesFolder(tmp_path / "shallow")
    write_layer_curves(deep, layer_rows(vgg_layers(12), [0, 1, 2]))
    write_layer_curves(shallow, layer_rows(vgg_layers(3), [0, 1, 2]))
    charts = custom_scalars(tmp_path)
    assert list(charts) == ["layer/ncc_accuracy/train", "layer/ncc_accuracy/test", "layer/cdnv/train",
                            "layer/cdnv/test", "layer/effective_depth/train"]
    for title, lines in charts.items():
        if title == "layer/effective_depth/train":
            assert lines == {run: {f"{title}/all": [(0, 2.0), (1, 2.0), (2, 2.0)]} for run in ("deep/layers",
                                                                                             "shallow/layers")}
            continue
        for run, layers in (("deep/layers", vgg_layers(12)), ("shallow/layers", vgg_layers(3))):
            assert layers_in_tag_order(lines[run]) == layers  # features.2 before features.10
            assert sorted(lines[run]) == [f"{title}/{index:03d} {layer}" for index, layer in enumerate(layers)]
            split = title.split("/")[2]
            assert all(curve == [(step, as_stored(index + step / 100 + ("train", "test").index(split) / 1000))
                                 for step in (0, 1, 2)]
                       for index, curve in enumerate(lines[run][tag] for tag in sorted(lines[run])))
    assert sorted(read_curves(deep.layers_path))[:4] == ["layer/cdnv/test/000 input", "layer/cdnv/test/001 features.0",
                                                         "layer/cdnv/test/002 features.1",
                                                         "layer/cdnv/test/003 features.2"]


@pytest.mark.parametrize("depth", [416, 1200])
def test_a_model_of_hundreds_of_layers_keeps_one_chart_and_its_order(tmp_path, depth):
    """416 layers (a layer index of three digits) and 1200 (four): still one chart, the lines in the model's order."""
    curves = CurvesFolder(tmp_path / "wide")
    layers = [f"blocks.{number}" for number in range(depth)]
    write_layer_curves(curves, layer_rows(layers, [0, 1], metrics=("ncc_accuracy",), splits=("test",)))
    charts = custom_scalars(tmp_path)
    assert list(charts) == ["layer/ncc_accuracy/test", "layer/effective_depth/train"]
    digits = max(3, len(str(depth - 1)))
    lines = charts["layer/ncc_accuracy/test"]["wide/layers"]
    assert layers_in_tag_order(lines) == layers
    assert sorted(lines) == [f"layer/ncc_accuracy/test/{index:0{digits}d} blocks.{index}" for index in range(depth)]


def test_a_second_analysis_call_rewrites_the_curves_without_a_point_twice(tmp_path):
    """The analysis measures a new checkpoint (iteration 2) and a new metric, then is called again with nothing
    new: one event file each time, every point once on disk (restart markers ignored) and as TensorBoard shows it."""
    curves = CurvesFolder(tmp_path / "run")
    layers = vgg_layers(12)
    write_layer_curves(curves, layer_rows(layers, [0, 1], metrics=("ncc_accuracy",)))
    grown = layer_rows(layers, [0, 1, 2])
    for _ in range(2):
        write_layer_curves(curves, grown)
    assert [path.name for path in curves.layer_files()] == ["events.out.tfevents.000003.layers"]
    on_disk = read_curves(curves.layers_path, purge=False)
    assert on_disk == read_curves(curves.layers_path)
    assert len(on_disk) == 2 * 2 * len(layers) + 1 and all([step for step, _ in curve] == [0, 1, 2]
                                                           for curve in on_disk.values())
    charts = custom_scalars(tmp_path)
    assert {tag: curve for lines in charts.values() for tag, curve in lines["run/layers"].items()} == on_disk


def test_tensorboard_false_writes_no_event_file(tmp_path, in_process):
    assert in_process("train.py", tiny_words(tmp_path, "epochs=1", "tensorboard=false")).returncode == 0
    assert analysis.main([f"out_dir={tmp_path}", *QUICK_ANALYSIS, "metrics=ncc_accuracy", "tensorboard=false"]) == 0
    assert not ExperimentFolder(tmp_path / "default").tensorboard_path.exists()
    assert not list(tmp_path.rglob("*tfevents*"))


def warnings_of(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name in ("training.curves", "measuring.curves") and record.levelno == logging.WARNING]


def test_an_unwritable_curves_folder_is_one_warning_and_training_goes_on(tmp_path, tiny_settings, caplog, one_thread):
    """A file where the tensorboard folder should be: one warning line for the run, one per run the
    analysis measures; both finish, the run bit for bit as one without curves."""
    settings, execution = tiny_settings("epochs=1")
    experiment, plain = ExperimentFolder(tmp_path / "default"), ExperimentFolder(tmp_path / "plain")
    experiment.path.mkdir()
    experiment.tensorboard_path.write_text("in the way\n")
    with caplog.at_level(logging.WARNING):
        assert loop.run(settings, experiment.run(settings.run_id).path, execution) == "done"
        (warning,) = warnings_of(caplog)
        assert settings.run_id in warning and "training goes on" in warning and "\n" not in warning
        caplog.clear()
        assert analysis.main([f"out_dir={tmp_path}", *QUICK_ANALYSIS, "metrics=ncc_accuracy"]) == 0
        assert len(warnings_of(caplog)) == 1
    off = tiny_settings("epochs=1", "tensorboard=false")[1]
    assert loop.run(settings, plain.run(settings.run_id).path, off) == "done"
    assert digests(experiment.run(settings.run_id)) == digests(plain.run(settings.run_id))
    assert experiment.run(settings.run_id).log_path.read_bytes() == plain.run(settings.run_id).log_path.read_bytes()


def test_a_full_disk_mid_run_is_one_warning_and_the_run_ends_as_without_curves(tmp_path, tiny_settings, caplog,
                                                                               monkeypatch, one_thread):
    """The disk fills at the third write of events: one warning, no event written after it, and the run (a
    folder of its own, outside an experiment: its curves in <run_dir>/tensorboard/) ends bitwise equal."""
    settings, execution = tiny_settings()
    calls, real_append = [0], training_curves.append

    def filling_up(path, events):
        calls[0] += 1
        if calls[0] >= 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_append(path, events)

    monkeypatch.setattr(training_curves, "append", filling_up)
    full = RunFolder(tmp_path / "full")
    with caplog.at_level(logging.WARNING):
        assert loop.run(settings, full.path, execution) == "done"
    (warning,) = warnings_of(caplog)
    assert warning.startswith("full: ") and "No space left on device" in warning  # the folder's name: its run id
    assert calls[0] == 3  # given up at the first failure
    assert full.curves().path == full.path / "tensorboard"
    assert set(read_curves(full.curves().path)) == {"test/loss", "test/accuracy"}  # iteration 0's, then full
    monkeypatch.setattr(training_curves, "append", real_append)
    reference = RunFolder(tmp_path / "reference")
    assert loop.run(settings, reference.path, tiny_settings("tensorboard=false")[1]) == "done"
    assert digests(full) == digests(reference) and full.log_path.read_bytes() == reference.log_path.read_bytes()
    assert not (reference.path / "tensorboard").exists()
