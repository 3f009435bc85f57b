"""analysis.py end to end on tiny runs: the tidy table, incremental recomputation, features export."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import analysis
from tests.conftest import REPOSITORY, SMALL_RUN, copied, run_cli, tiny_words

pytestmark = pytest.mark.slow  # end to end: real runs trained and measured (make test-fast leaves them out)

# Small, so the closed-form decoder (features -> every pixel) stays cheap: 8x8 images.
RUN = SMALL_RUN
QUICK = ["probe_dimensions=32", "log_level=WARNING"]
NO_FIGURES = "figures=false"  # for the calls whose test reads no figure nor the report (drawing them takes seconds)


@pytest.fixture
def trained(two_runs_trained, tmp_path):
    """This test's own copy of two runs (label_noise=0,0.25 of RUN), trained once per session, not measured."""
    return copied(two_runs_trained, tmp_path)


@pytest.fixture
def measured(two_runs_measured, tmp_path):
    """This test's own copy of those two runs measured under QUICK (the figures, the report and phases drawn)."""
    return copied(two_runs_measured, tmp_path)


def test_every_checkpoint_layer_metric_and_split_lands_in_one_tidy_table(measured):
    assert analysis.main([f"out_dir={measured}", *QUICK]) == 0  # nothing new: the session measured it
    table = pd.read_parquet(measured / "default" / "metrics.parquet")
    from metrics import registry

    assert set(table["metric"]) == set(registry.select("all"))  # every metric of `all` applies to RGB synthetic runs
    assert {"ncc_accuracy", "cdnv", "probe_accuracy", "transfer_accuracy", "reconstruction_mse", "classifier_loss",
            "classifier_accuracy", "effective_depth"} <= set(table["metric"])
    assert not table.duplicated(["run_id", "iteration", "layer", "metric", "split"]).any()
    assert table["run_id"].nunique() == 2 and set(table["iteration"]) == {0, 1, 2, 4, 8}
    layers = table[table["metric"] == "ncc_accuracy"].sort_values("layer_index")["layer"].unique().tolist()
    assert layers == ["input", "stem", "block00", "logits"]
    assert {"label_noise", "depth", "lr", "epoch"} <= set(table.columns)  # settings as columns, ready for seaborn
    for metric in ("ncc_accuracy", "probe_accuracy", "transfer_accuracy", "classifier_accuracy"):
        values = table[table["metric"] == metric]["value"]
        assert values.between(0, 1).all(), metric
    assert (table[table["metric"] == "cdnv"]["value"] >= 0).all()
    probe = table[table["metric"] == "probe_accuracy"]
    assert probe["l2"].notna().all() and (probe["dimensions"] <= 32).all()  # the choices are recorded


def test_a_notebook_anywhere_imports_the_lab_and_reads_both_tables(two_runs_trained, measured, tmp_path):
    """The notebook start of docs/models.md: `uv sync` installs the lab in editable form, so a Python started in
    any folder imports it; read_table and read_similarity give the experiment's two tables (of the question QUICK
    asks: probe_dimensions=32)."""
    import subprocess
    import sys

    from conf import SettingsError

    with pytest.raises(SettingsError, match="similarity.parquet does not exist"):  # reads, writes nothing
        analysis.read_similarity(two_runs_trained / "default")
    assert analysis.main([f"out_dir={measured}", *QUICK]) == 0  # nothing new: the session measured its copy
    script = ("import analysis; table = analysis.read_table(sys.argv[1], sys.argv[2]); similarity = "
              "analysis.read_similarity(sys.argv[1], sys.argv[2]); print(analysis.__file__, len(table), "
              "similarity['run_id'].nunique(), sorted(set(similarity['comparison'])))")
    elsewhere = tmp_path / "a_notebook_folder"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-c", "import sys; " + script, str(measured / "default"), QUICK[0]], cwd=elsewhere,
                            capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    module, rows, runs, comparisons = result.stdout.split(maxsplit=3)
    assert Path(module) == REPOSITORY / "analysis.py" and int(rows) == len(analysis.read_table(measured / "default", None))
    assert int(runs) == 2 and comparisons.strip() == "['layers', 'to_final']"


def test_the_decoder_is_not_fitted_from_the_input_to_itself(measured):
    # The identity reconstructs the input exactly: that map measures nothing (metrics/engine.py
    # SKIPPED_TARGETS), so the input layer has no reconstruction rows; every other layer has both splits.
    assert analysis.main([f"out_dir={measured}", *QUICK]) == 0  # nothing new: the session measured it
    table = pd.read_parquet(measured / "default" / "metrics.parquet")
    reconstruction = table[table["metric"] == "reconstruction_mse"]
    assert set(reconstruction["layer"]) == {"stem", "block00", "logits"}
    assert (reconstruction.groupby(["iteration", "layer"])["split"].nunique() == 2).all()
    assert set(table[table["metric"] == "probe_accuracy"]["layer"]) == {"input", "stem", "block00", "logits"}


def written_files(experiment: Path) -> dict[Path, int]:
    """{path: modification time} of every cell, part, figure, the report and phases.csv."""
    paths = [*experiment.glob("metrics/*/*"), *experiment.glob("*.parquet/*"), *experiment.glob("figures/*"),
             experiment / "report.html", experiment / "phases.csv", experiment / "findings.csv"]
    return {path: path.stat().st_mtime_ns for path in paths}


def test_second_call_recomputes_and_redraws_nothing_and_a_new_recipe_everything(measured, in_process):
    """A call with nothing new writes nothing at all (cells, table, figures, report: their times are
    watched) and says so in one line; a new recipe measures again and redraws; a filtered redraw removes
    the figures of the runs it leaves out. (The first call, its measuring and drawing: the session's.)"""
    experiment = measured / "default"
    assert analysis.main([f"out_dir={measured}", *QUICK]) == 0
    stamps = written_files(experiment)
    heatmaps = sorted(path.name for path in experiment.glob("figures/heatmap_*.png"))
    assert len(heatmaps) == 2  # one per run
    result = in_process("analysis.py", [f"out_dir={measured}", *QUICK])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"nothing new: 2 run(s), 10 checkpoint(s) measured before; the table, {len(figures_drawn(experiment))} "
        f"figure(s), phases.csv, findings.csv and the report are up to date ({experiment / 'report.html'})"]
    assert written_files(experiment) == stamps
    result = in_process("analysis.py", ["figures", f"out_dir={measured}", *QUICK])
    assert result.stdout.startswith("nothing new: the table") and written_files(experiment) == stamps
    result = in_process("analysis.py", [f"out_dir={measured}", "depth=1", "label_noise=0.25", *QUICK,
                                        "heldout_fraction=0.2"])
    assert "1 run(s): 5 checkpoint(s) measured" in result.stdout
    assert "redrawn (ncc_by_layer" in result.stdout
    changed = written_files(experiment)
    assert changed[experiment / "report.html"] != stamps[experiment / "report.html"]
    left = sorted(path.name for path in experiment.glob("figures/heatmap_*.png"))
    assert len(left) == 1 and left[0] in heatmaps  # the run filtered out lost its heatmap; the other's was redrawn
    assert changed[experiment / "figures" / left[0]] != stamps[experiment / "figures" / left[0]]


def figures_drawn(experiment: Path) -> list[str]:
    """The figures (PNG files) the last publication drew (figures/.published.json)."""
    import json

    record = json.loads((experiment / "figures" / ".published.json").read_text())
    return [name for entry in record["figures"].values() for name in entry["files"] if name.endswith(".png")]


def test_only_new_checkpoints_are_measured_while_a_run_trains(one_run_measured, tmp_path, in_process):
    out_dir = copied(one_run_measured, tmp_path)  # RUN (epochs=2) trained and measured once per session
    assert analysis.main([f"out_dir={out_dir}", *QUICK, NO_FIGURES]) == 0
    assert run_cli("train.py", tiny_words(out_dir, *RUN, "epochs=3")).returncode == 0  # a second run appears
    result = in_process("analysis.py", [f"out_dir={out_dir}", *QUICK, NO_FIGURES])
    assert "2 run(s): 6 checkpoint(s) measured, 5 already fresh" in result.stdout


def test_a_corrupt_checkpoint_is_reported_and_skipped(trained, in_process):
    victim = next((trained / "default" / "runs").glob("*/checkpoints/iteration_00000004.pt"))
    victim.write_bytes(b"garbage")
    result = in_process("analysis.py", [f"out_dir={trained}", *QUICK, NO_FIGURES])
    assert result.returncode == 1 and "1 corrupt" in result.stdout  # measured the rest, then said what it skipped
    assert "iteration_00000004.pt is missing or corrupt" in result.stderr


def test_features_export_matches_the_model(trained, tmp_path, in_process):
    """The exported arrays are the checkpoint's model's features of every layer on the normalised split, and the
    labels those the run trained on (noisy ones for the train split), recomputed here from the checkpoint alone.
    The test split is exported by `python analysis.py features` as a user types it, the train split in this
    process (the same main(), without a second interpreter)."""
    import data
    import models
    from conf import Settings
    from tests.conftest import read_json

    run_dir = next(run for run in (trained / "default" / "runs").iterdir()
                   if read_json(run / "settings.json")["settings"]["label_noise"] == 0.25)
    checkpoint = torch.load(run_dir / "checkpoints" / "iteration_00000008.pt", weights_only=True)
    assert checkpoint["iteration"] == 8
    settings = Settings.from_record(checkpoint["settings"])
    model = models.build(settings, input_shape=(3, 8, 8), num_classes=10)
    model.load_state_dict(checkpoint["model"])
    dataset = data.load_dataset(settings, data_root=tmp_path / "unused", download=False)
    noisy, _ = data.apply_label_noise(dataset.train_labels, fraction=0.25, num_classes=10, seed=settings.seed)
    assert not torch.equal(noisy, dataset.train_labels)
    for split, images, labels, run in (("train", dataset.train_images, noisy, in_process),
                                       ("test", dataset.test_images, dataset.test_labels, run_cli)):
        out = tmp_path / f"{split}.npz"
        result = run("analysis.py", ["features", str(run_dir), "iteration=8", f"split={split}", f"out={out}"])
        assert result.returncode == 0, result.stderr
        arrays = np.load(out)
        with torch.no_grad():
            expected = model.eval().features(data.normalize(images, dataset.mean, dataset.std))
        assert set(arrays.files) == {"labels", *expected} == {"labels", "input", "stem", "block00", "logits"}
        assert np.array_equal(arrays["labels"], labels.numpy()), split
        for name, tensor in expected.items():
            assert arrays[name].shape == (len(labels), tensor[0].numel()), (split, name)
            np.testing.assert_allclose(arrays[name], tensor.flatten(1).numpy(), rtol=1e-5, atol=1e-5,
                                       err_msg=f"{split} {name}")


@pytest.mark.parametrize("words, needle, through_the_cli", [
    (["features", "/nonexistent"], "is not a run folder", False),
    (["probe_dimensions=0"], "probe_dimensions=0 is out of range", False),
    (["heldout_fraction=1"], "heldout_fraction=1.0 is out of range", False),
    (["nonsense=1"], "unknown key 'nonsense'", True),  # `python analysis.py ...` as typed; the others: main()
    (["metrics=ncc_accuracy,ncc_acuracy"], "metrics=ncc_accuracy,ncc_acuracy names ncc_acuracy; accepted: all", False),
])
def test_bad_analysis_input_exits_2(tmp_path, in_process, words, needle, through_the_cli):
    run = run_cli if through_the_cli else in_process
    result = run("analysis.py", [*words, f"out_dir={tmp_path}"] if words[0] != "features" else words)
    assert result.returncode == 2 and needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _measure_table(run_dir, batch_size: int, order=None):
    from conf.analysis import Analysis
    from folders import RunFolder
    from measuring.inputs import load_model, splits_of
    from metrics import engine

    run = RunFolder(run_dir).read_record()
    train, test, classes = splits_of(run, Path("datasets"), False, torch.device("cpu"))
    if order is not None:  # the same examples in another order
        train = engine.SplitData(train.images[order], train.labels[order], train.mean, train.std)
    _, model = load_model(run, 8, "cpu")
    rows = engine.measure(model, train, test, classes, Analysis(analysis_batch_size=batch_size, probe_dimensions=32), 0)
    return {(row["layer"], row["metric"], row["split"]): row["value"] for row in rows}


def test_results_do_not_depend_on_batch_size_or_order(trained):
    run_dir = sorted((trained / "default" / "runs").iterdir())[0]
    reference = _measure_table(run_dir, 500)
    # The accumulators are batch-independent to 1e-10 on fixed features (tests/test_metrics.py); here
    # the model's float32 features themselves differ in the last bits between batch sizes. NC1 multiplies
    # that rounding by the condition number of the between-class covariance it pseudo-inverts (tr(Σ_W Σ_B⁺)):
    # at the logits of this barely trained net, 2e-6 relative with two threads (Papyan et al. 2020, NC1).
    batched = _measure_table(run_dir, 7)
    # BatchNorm on each batch's own statistics depends on the batch by definition (its recipe has the batch size)
    batch_statistics = ("logits", "classifier_accuracy_batch_statistics", "test")
    assert reference.pop(batch_statistics) != batched.pop(batch_statistics)
    collapse = {key for key in reference if key[1] == "nc1"}
    assert {key: batched[key] for key in collapse} == pytest.approx({key: reference[key] for key in collapse}, rel=1e-4)
    # nan_ok: effective_depth_literal is undefined (NaN) where no layer reaches the paper's ε, in both tables
    assert {key: value for key, value in batched.items() if key not in collapse} == pytest.approx(
        {key: value for key, value in reference.items() if key not in collapse}, rel=1e-6, abs=1e-9, nan_ok=True)
    # Reordering moves examples in and out of the held-out part (drawn by position), which may move
    # the probes' l2; the NCC rule, CDNV and the classifier do not depend on it.
    shuffled = _measure_table(run_dir, 33, order=torch.randperm(128, generator=torch.Generator().manual_seed(1)))
    for key, value in reference.items():
        if key[1] in ("ncc_accuracy", "cdnv", "classifier_loss", "classifier_accuracy"):
            assert shuffled[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_a_registered_metric_is_measured_for_every_layer_and_split(trained):
    from metrics import registry

    @registry.register("class_count", version=1, paper="test", needs=("class_moments",))
    def class_count(layer):
        return {split: float((moments.count > 0).sum()) for split, moments in layer.classes.items()}

    try:
        table = _measure_table(sorted((trained / "default" / "runs").iterdir())[0], 500)
    finally:
        del registry.METRICS["class_count"]
    counted = {key: value for key, value in table.items() if key[1] == "class_count"}
    assert len(counted) == 4 * 2 and set(counted.values()) == {10.0}


def test_two_analysis_processes_at_once_corrupt_nothing(trained, in_process):
    import subprocess
    import sys

    from tests.conftest import REPOSITORY

    command = [sys.executable, str(REPOSITORY / "analysis.py"), f"out_dir={trained}", *QUICK]
    processes = [subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    table = pd.read_parquet(trained / "default" / "metrics.parquet")
    assert not table.duplicated(["run_id", "iteration", "layer", "metric", "split"]).any()
    assert len(table.groupby(["run_id", "iteration"])) == 10  # every checkpoint of both runs, once
    again = in_process("analysis.py", [f"out_dir={trained}", *QUICK])
    # nothing measured; the figures are up to date, or drawn once more if the two publications interleaved
    assert "2 run(s), 10 checkpoint(s) measured before" in again.stdout, again.stdout


def test_the_transfer_probe_can_read_another_dataset(measured, tmp_path, in_process):
    from tests.fabricate import fabricate_mnist

    own = _measure_rows(measured, [])  # the session measured them
    other = _measure_rows(measured, ["transfer_dataset=synthetic"])  # drawn with the next data seed
    for key, value in own.items():
        if key[3] != "transfer_accuracy":
            assert other[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key  # nothing else moves
    assert {key: value for key, value in other.items() if key[3] == "transfer_accuracy"} != \
        {key: value for key, value in own.items() if key[3] == "transfer_accuracy"}
    fabricate_mnist(tmp_path / "datasets", 20, 10)
    result = in_process("analysis.py", [f"out_dir={measured}", f"data_root={tmp_path / 'datasets'}", "download=false",
                                        "transfer_dataset=mnist", *QUICK])
    assert result.returncode == 2 and "transfer_dataset=mnist has images of shape (1, 28, 28)" in result.stderr


def _measure_rows(out_dir, words):
    """{key: value} of the rows an analysis under QUICK and `words` (analysis options) measured: its question's
    (no figure drawn: no test here reads them)."""
    assert analysis.main([f"out_dir={out_dir}", *QUICK, *words, NO_FIGURES]) == 0
    table = analysis.read_table(out_dir / "default", " ".join([QUICK[0], *words]))
    return {(row.run_id, row.iteration, row.layer, row.metric, row.split): row.value for row in table.itertuples()}


def test_a_new_checkpoint_of_a_training_run_is_the_only_new_cell(one_run_trained, tmp_path, in_process):
    import json

    out_dir = copied(one_run_trained, tmp_path)  # RUN, trained once per session
    (run_dir,) = (out_dir / "default" / "runs").iterdir()
    manifest_path = run_dir / "manifest.json"
    complete = manifest_path.read_text()
    manifest = json.loads(complete)
    for name in ("iteration_00000004.pt", "iteration_00000008.pt"):  # not written yet, as while it trains
        del manifest["files"][name]
    manifest_path.write_text(json.dumps(manifest))
    first = in_process("analysis.py", [f"out_dir={out_dir}", *QUICK, NO_FIGURES])
    assert "1 run(s): 3 checkpoint(s) measured" in first.stdout
    manifest_path.write_text(complete)  # training went on: two more checkpoints
    second = in_process("analysis.py", [f"out_dir={out_dir}", *QUICK, NO_FIGURES])
    assert "1 run(s): 2 checkpoint(s) measured, 3 already fresh" in second.stdout
    table = pd.read_parquet(out_dir / "default" / "metrics.parquet")
    assert sorted(table["iteration"].unique()) == [0, 1, 2, 4, 8]


def test_learnphase_trained_maps_can_replace_the_closed_form(measured):
    closed = _measure_rows(measured, [])  # the session measured them
    adam = _measure_rows(measured, ["linear_maps=adam"])
    table = analysis.read_table(measured / "default", f"{QUICK[0]} linear_maps=adam")
    assert table[table["metric"] == "probe_accuracy"]["l2"].isna().all()  # no l2 is chosen for a trained map
    for key, value in adam.items():
        if key[3] == "reconstruction_mse" and key[4] == "train":  # the closed form is the training optimum
            assert value >= closed[key] * (1 - 1e-6), key
        if key[3] in ("ncc_accuracy", "cdnv"):
            assert value == pytest.approx(closed[key], rel=1e-9), key


def _cells(out_dir) -> dict:
    return {path: pd.read_parquet(path) for path in sorted((out_dir / "default" / "metrics").rglob("*.parquet"))}


@pytest.fixture
def engine_calls(monkeypatch):
    """The metrics each engine call was asked for (the real engine still does the work; engine.measure calls
    measure_layers too)."""
    from metrics import engine

    calls, real_measure = [], engine.measure_layers

    def measure(*arguments, **keywords):
        calls.append(tuple(keywords["metrics"]))
        return real_measure(*arguments, **keywords)

    monkeypatch.setattr(engine, "measure_layers", measure)
    return calls


def test_metrics_selects_and_a_metric_added_later_computes_only_its_cells(trained, engine_calls):
    assert analysis.main([f"out_dir={trained}", *QUICK, "metrics=cdnv,ncc_accuracy", NO_FIGURES]) == 0
    table = pd.read_parquet(trained / "default" / "metrics.parquet")
    assert set(table["metric"]) == {"ncc_accuracy", "cdnv"} and len(engine_calls) == 10
    assert set(engine_calls) == {("ncc_accuracy", "cdnv")}
    before = _cells(trained)
    engine_calls.clear()
    assert analysis.main([f"out_dir={trained}", *QUICK, "metrics=ncc_accuracy,cdnv,probe_accuracy", NO_FIGURES]) == 0
    assert engine_calls == [("probe_accuracy",)] * 10  # only the new metric is computed
    for path, cell in _cells(trained).items():
        columns = [column for column in before[path].columns if column != "transfer_task"]
        old = cell[cell["metric"].isin(["ncc_accuracy", "cdnv"])][columns].reset_index(drop=True)
        pd.testing.assert_frame_equal(old, before[path][columns])  # the kept rows, unchanged
        assert set(cell["metric"]) == {"ncc_accuracy", "cdnv", "probe_accuracy"}
    table = pd.read_parquet(trained / "default" / "metrics.parquet")
    assert set(table["metric"]) == {"ncc_accuracy", "cdnv", "probe_accuracy"}
    engine_calls.clear()
    assert analysis.main([f"out_dir={trained}", *QUICK, "metrics=probe_accuracy", NO_FIGURES]) == 0
    assert engine_calls == []  # fresh; and the table keeps every fresh metric, selected now or not
    assert set(pd.read_parquet(trained / "default" / "metrics.parquet")["metric"]) == {"ncc_accuracy", "cdnv",
                                                                                         "probe_accuracy"}


def test_another_transfer_task_recomputes_only_the_transfer_probe(trained, engine_calls):
    own = _measure_rows(trained, [])
    from metrics import registry

    assert len(engine_calls) == 10 and set(engine_calls[0]) == set(registry.select("all"))  # every metric, every checkpoint
    engine_calls.clear()
    other = _measure_rows(trained, ["transfer_task=brightness"])
    assert engine_calls == [("transfer_accuracy",)] * 10
    assert {key: value for key, value in own.items() if key[3] != "transfer_accuracy"} == pytest.approx(
        {key: value for key, value in other.items() if key[3] != "transfer_accuracy"}, rel=0, abs=0, nan_ok=True)
    table = analysis.read_table(trained / "default", f"{QUICK[0]} transfer_task=brightness")  # that question's rows
    assert set(table[table["metric"] == "transfer_accuracy"]["transfer_task"]) == {"brightness"}
    every = analysis.read_table(trained / "default", None)  # the first question's rows beside them
    assert set(every[every["metric"] == "transfer_accuracy"]["transfer_task"]) == {"brightness", "colour_dominance"}
