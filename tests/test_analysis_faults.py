"""analysis.py under faults: a bad file or run is reported by name and skipped while the rest is measured,
bad input and a bad environment end in one line (exit 2 and 1), and nothing is measured twice or lost.

Four tiny runs are trained and measured once per module; each test works on its own copy of them."""

import contextlib
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

import analysis
from conf import SettingsError, parse_arguments
from folders import ExperimentFolder, RunFolder
from measuring import store
from measuring.inputs import load_model
from measuring.layout import StoreLayout
from metrics import engine
from slurm import analysis_job
from tests.conftest import copied, run_cli, trained_and_measured

pytestmark = pytest.mark.slow  # end to end: real runs trained and measured (make test-fast leaves them out)

RUN = ["image_size=8", "depth=1", "width=4", "epochs=2", "synthetic_train_size=128"]  # 5 checkpoints: 0 1 2 4 8
QUICK = ["probe_dimensions=32", "log_level=WARNING", "threads=1"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """An out_dir with 4 runs (seeds 0-3), every checkpoint measured, figures, report and phases drawn."""
    return trained_and_measured(tmp_path_factory.mktemp("measured"), [*RUN, "seed=0,1,2,3"], QUICK)


@pytest.fixture
def out_dir(measured, tmp_path):
    """This test's own copy of the measured out_dir."""
    return copied(measured, tmp_path)


def experiment_of(out_dir: Path) -> ExperimentFolder:
    return ExperimentFolder.of(out_dir, "default")


def run_folders(out_dir: Path) -> list[RunFolder]:
    return experiment_of(out_dir).run_folders()


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return result.stderr.strip().splitlines()


def replace_checkpoint(folder: RunFolder, iteration: int, payload: bytes) -> Path:
    """Put `payload` in the checkpoint's place and record its sha256 in the manifest, so it passes the hash check."""
    path = folder.checkpoint_path(iteration)
    path.write_bytes(payload)
    manifest = json.loads(folder.manifest_path.read_text())
    manifest["files"][path.name]["sha256"] = hashlib.sha256(payload).hexdigest()
    folder.manifest_path.write_text(json.dumps(manifest))
    return path


def saved(value) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def not_a_checkpoint() -> bytes:
    """A file torch loads (weights_only) that is no checkpoint of ours: another tool's tensors."""
    return saved({"weights": torch.zeros(3)})


def foreign_weights(folder: RunFolder, iteration: int) -> bytes:
    """The checkpoint with every field in place but weights of another model: it loads, its model does not build."""
    checkpoint = torch.load(folder.checkpoint_path(iteration), weights_only=True)
    return saved({**checkpoint, "model": {"weights": torch.zeros(3)}})


def another_format(folder: RunFolder, iteration: int) -> bytes:
    """The checkpoint with every field in place but another format's number: refused like any foreign file."""
    from folders import FORMAT_VERSION

    checkpoint = torch.load(folder.checkpoint_path(iteration), weights_only=True)
    return saved({**checkpoint, "format_version": FORMAT_VERSION - 1})


def edit_settings(folder: RunFolder, change) -> None:
    record = json.loads(folder.settings_path.read_text())
    change(record)
    folder.settings_path.write_text(json.dumps(record))


@contextlib.contextmanager
def read_only_folder(path: Path, content: Path | None = None):
    """`path` as a read-only file system (chmod does not stop root), holding a copy of `content`."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command here; the read-only cases need a read-only tmpfs")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the read-only cases need one")
    try:
        if content is not None:
            shutil.copytree(content, path, dirs_exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True, capture_output=True)


# -- fault 3: features verifies the checkpoint -------------------------------------------------------------


@pytest.mark.parametrize("damage", ["altered", "not_a_checkpoint", "foreign_weights", "another_format"])
def test_features_refuses_a_damaged_checkpoint_with_one_line(out_dir, tmp_path, in_process, damage):
    folder = run_folders(out_dir)[0]
    if damage == "altered":  # the manifest's sha256 no longer matches
        victim = folder.checkpoint_path(8)
        victim.write_bytes(victim.read_bytes()[:-10] + bytes(10))
    else:  # hashes right and loads, but rebuilds no model
        payloads = {"not_a_checkpoint": not_a_checkpoint, "foreign_weights": lambda: foreign_weights(folder, 8),
                    "another_format": lambda: another_format(folder, 8)}
        victim = replace_checkpoint(folder, 8, payloads[damage]())
    out = tmp_path / "feats.npz"
    result = in_process("analysis.py", ["features", str(folder.path), "iteration=8", f"out={out}"])
    assert result.returncode == 2, result.stderr
    assert len(error_lines(result)) == 1 and str(victim) in result.stderr, result.stderr
    assert not out.exists()  # never exported values


@pytest.mark.parametrize("missing", ["iteration", "epoch", "stage"])
def test_a_checkpoint_without_the_fields_the_rows_need_is_corrupt(out_dir, missing):
    """The measured rows carry the checkpoint's iteration, epoch and stage: without one it is named, not a KeyError."""
    from folders import CorruptFile

    folder = run_folders(out_dir)[0]
    checkpoint = torch.load(folder.checkpoint_path(8), weights_only=True)
    victim = replace_checkpoint(folder, 8, saved({key: value for key, value in checkpoint.items() if key != missing}))
    with pytest.raises(CorruptFile, match=victim.name):
        load_model(folder.read_record(), 8, "cpu")


# -- fault 4: one bad file does not stop the others ----------------------------------------------------------


def break_one_file_of_each_kind(out_dir: Path) -> tuple[RunFolder, dict[str, Path]]:
    """Run 0 keeps its settings but gets two checkpoints that pass the hash and do not load or build a model;
    runs 1-3 get an unknown key, invalid JSON, an edited value. Returns run 0 and the broken files by kind."""
    good, unknown, invalid, edited = run_folders(out_dir)
    broken = {"garbage": replace_checkpoint(good, 4, b"garbage bytes"),
              "foreign": replace_checkpoint(good, 2, foreign_weights(good, 2))}
    edit_settings(unknown, lambda record: record["settings"].update(colour="red"))
    invalid.settings_path.write_text('{"run_id": ')
    edit_settings(edited, lambda record: record["settings"].update(lr=0.5))  # run id no longer matches
    broken.update(unknown=unknown.settings_path, invalid=invalid.settings_path, edited=edited.settings_path)
    return good, broken


def test_one_bad_file_is_skipped_by_name_and_the_rest_is_measured_merged_and_drawn(out_dir, in_process):
    experiment = experiment_of(out_dir)
    good, broken = break_one_file_of_each_kind(out_dir)
    shutil.rmtree(experiment.metrics_path / good.run_id)  # the good run's cells are measured anew
    for drawn in (experiment.report_path, experiment.phases_path):
        drawn.unlink()
    result = in_process("analysis.py", [f"out_dir={out_dir}", *QUICK])
    assert result.returncode == 1, result.stderr
    assert "1 run(s): 3 checkpoint(s) measured" in result.stdout and "2 corrupt" in result.stdout, result.stdout
    listed = result.stderr[result.stderr.index("error: 5 file(s) skipped"):].splitlines()[1:]
    assert len(listed) == 5 and all(any(str(path) in line for line in listed) for path in broken.values()), listed
    table = pd.read_parquet(experiment.table_path)
    assert set(table["run_id"]) == {good.run_id} and set(table["iteration"]) == {0, 1, 8}
    assert experiment.phases_path.exists() and good.run_id in experiment.report_path.read_text()
    drawn = list(experiment.figures_path.glob("*.png"))
    assert drawn and all(path.read_bytes().startswith(b"\x89PNG") for path in drawn)


def test_the_merge_leaves_out_a_run_with_bad_settings_and_an_unreadable_cell(out_dir):
    experiment = experiment_of(out_dir)
    first, second, third, fourth = run_folders(out_dir)
    third.settings_path.write_text("not json")
    StoreLayout(experiment).cell_path(second.run_id, 4).write_bytes(b"not parquet")
    store.merge(experiment, experiment.read_runs())
    table = pd.read_parquet(experiment.table_path)
    assert set(table["run_id"]) == {first.run_id, second.run_id, fourth.run_id}
    assert set(table[table["run_id"] == second.run_id]["iteration"]) == {0, 1, 2, 8}


# -- fault 5: nothing to measure or draw is refused, leaving the files as they were ------------------------


def snapshot(paths) -> dict:
    """Bytes and modification times of these files, and of the files in these folders (the table's parts)."""
    files = [file for path in paths for file in (sorted(path.rglob("*")) if path.is_dir() else [path])]
    return {file: (file.read_bytes(), file.stat().st_mtime_ns) for file in files}


def test_a_filter_that_matches_no_run_changes_nothing(out_dir, in_process):
    experiment = experiment_of(out_dir)
    kept = [experiment.report_path, experiment.phases_path, experiment.table_path]
    before = snapshot(kept)
    for words in ([f"out_dir={out_dir}", "depth=99", *QUICK], ["figures", f"out_dir={out_dir}", "depth=99"]):
        result = in_process("analysis.py", words)
        assert result.returncode == 2, result.stderr
        assert len(error_lines(result)) == 1 and "depth=99" in result.stderr, result.stderr
        assert snapshot(kept) == before


@pytest.mark.parametrize("layout", ["no_folder", "empty_runs_folder"])
def test_an_out_dir_without_runs_is_refused_naming_the_folder(tmp_path, in_process, layout):
    experiment = experiment_of(tmp_path / "mistyped")
    if layout == "empty_runs_folder":
        experiment.runs_path.mkdir(parents=True)
    result = in_process("analysis.py", [f"out_dir={tmp_path / 'mistyped'}", *QUICK])
    assert result.returncode == 2 and len(error_lines(result)) == 1, result.stderr
    assert str(experiment.runs_path) in result.stderr
    assert not experiment.table_path.exists()


def test_figures_without_a_table_or_rows_is_refused_with_one_line(tmp_path, in_process):
    experiment = experiment_of(tmp_path)
    missing = in_process("analysis.py", ["figures", f"out_dir={tmp_path}"])
    assert missing.returncode == 2 and len(error_lines(missing)) == 1, missing.stderr
    store.merge(experiment, experiment.read_runs())  # a merge of no cell: a table folder without parts
    empty = in_process("analysis.py", ["figures", f"out_dir={tmp_path}"])
    assert empty.returncode == 2 and len(error_lines(empty)) == 1, empty.stderr
    assert str(experiment.table_path) in empty.stderr and not experiment.report_path.exists()


# -- fault 6: the environment is one line, exit 1; a bad device is bad input, exit 2 -------------------------


def test_an_out_dir_that_is_a_file_is_one_line_exit_1(tmp_path):
    """Through `python analysis.py` as typed (the module's other refusals run main() in this process)."""
    (tmp_path / "a_file").write_text("")
    result = run_cli("analysis.py", [f"out_dir={tmp_path / 'a_file'}", *QUICK])
    assert result.returncode == 1 and len(error_lines(result)) == 1, result.stderr
    assert str(tmp_path / "a_file") in result.stderr and "is a file" in result.stderr


def test_a_read_only_out_dir_is_one_line_exit_1(measured, tmp_path, in_process):
    with read_only_folder(tmp_path / "read_only", content=measured) as read_only:
        assert len(run_folders(read_only)) == 4
        new_recipe = "heldout_fraction=0.2"  # every cell stale: there is work to do
        result = in_process("analysis.py", [f"out_dir={read_only}", *QUICK, new_recipe])
    assert result.returncode == 1 and len(error_lines(result)) == 1, result.stderr
    assert "read-only" in result.stderr and str(experiment_of(read_only).path) in result.stderr


@pytest.mark.parametrize("where", ["a_folder", "read_only_folder"])
def test_features_out_that_cannot_be_written_is_one_line_exit_1(out_dir, tmp_path, in_process, where):
    folder = run_folders(out_dir)[0]
    with contextlib.ExitStack() as stack:
        if where == "a_folder":
            out, needle = tmp_path, "that is a folder"
        else:
            out, needle = stack.enter_context(read_only_folder(tmp_path / "read_only")) / "feats.npz", "read-only"
        result = in_process("analysis.py", ["features", str(folder.path), "iteration=8", f"out={out}"])
    assert result.returncode == 1 and len(error_lines(result)) == 1, result.stderr
    assert needle in result.stderr and str(out if where == "a_folder" else out.parent) in result.stderr


def test_features_checks_the_device_as_train_does(out_dir, tmp_path, in_process):
    folder = run_folders(out_dir)[0]
    result = in_process("analysis.py", ["features", str(folder.path), "iteration=8", "device=tpu",
                                        f"out={tmp_path / 'feats.npz'}"])
    assert result.returncode == 2 and len(error_lines(result)) == 1, result.stderr
    assert "device='tpu'" in result.stderr and "auto, cpu, cuda" in result.stderr
    assert not (tmp_path / "feats.npz").exists()


# -- fault 7: threads= is applied, device=cuda without CUDA is refused ---------------------------------------


@pytest.fixture
def torch_threads():
    """torch's thread count as a test found it, restored after (main() changes it in this process)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_threads_is_applied_locally_and_in_the_slurm_job(out_dir, torch_threads):
    words = [f"out_dir={out_dir}", *QUICK, "figures=false"]  # QUICK holds threads=1
    torch.set_num_threads(2)
    assert analysis.main(words) == 0
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    run_id = run_folders(out_dir)[0].run_id
    analysis_job.analyse_job(run_id, str(experiment_of(out_dir).path), parse_arguments(words, analysis=True))
    assert torch.get_num_threads() == 1


def test_device_cuda_without_cuda_is_refused_with_one_line(out_dir, monkeypatch, capsys, torch_threads):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    experiment = experiment_of(out_dir)
    stamp = experiment.table_path.stat().st_mtime_ns
    assert analysis.main([f"out_dir={out_dir}", *QUICK, "device=cuda"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no CUDA device" in error[0], error
    assert experiment.table_path.stat().st_mtime_ns == stamp  # nothing measured or merged on the CPU instead
    words = [f"out_dir={out_dir}", *QUICK, "device=cuda"]
    with pytest.raises(SettingsError, match="no CUDA device"):
        analysis_job.analyse_job(run_folders(out_dir)[0].run_id, str(experiment.path),
                             parse_arguments(words, analysis=True))


# -- fault 8: a cell another process finished while we waited for its lock is not measured again --------------


def test_a_cell_finished_by_another_process_before_the_lock_is_not_measured_again(out_dir, monkeypatch, capsys,
                                                                                  torch_threads):
    experiment = experiment_of(out_dir)
    victim = StoreLayout(experiment).cell_path(run_folders(out_dir)[0].run_id, 4)
    finished = victim.read_bytes()
    victim.unlink()  # pending when this process looks ...
    real_claim, measured = store.claim, []

    def claim_after_the_other_process_finished(path):
        if path == victim:  # ... and written, fresh, by the other process before this one takes the lock
            victim.write_bytes(finished)
        return real_claim(path)

    real_measure = engine.measure_layers
    monkeypatch.setattr(store, "claim", claim_after_the_other_process_finished)
    monkeypatch.setattr(engine, "measure_layers", lambda *arguments, **options: measured.append(1) or real_measure(
        *arguments, **options))
    assert analysis.main([f"out_dir={out_dir}", *QUICK, "figures=false"]) == 0
    assert measured == [] and victim.read_bytes() == finished
    assert "0 checkpoint(s) measured, 20 already fresh" in capsys.readouterr().out
