"""A run folder is data, never code: a checkpoint whose embedded settings differ from its run's settings.json is
refused by every reader before a model is built from it; a user's module file is imported only when the run's
own settings name it, with one line naming it each time; a model whose layer runs twice in one pass is refused
by train.py's pre-flight and skipped (one line) by the analysis while the other runs are measured."""

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
import torch

import analysis
from folders import CorruptFile, ExperimentFolder, RunFolder
from measuring.inputs import load_model
from tests.conftest import refusal_lines, run_cli, tiny_words
from training import stages

pytestmark = pytest.mark.slow  # end to end: real runs trained and measured (make test-fast leaves them out)

SMALL = ["image_size=8", "synthetic_train_size=128", "synthetic_test_size=64", "epochs=1", "width=4"]
QUICK = ["probe_dimensions=32", "log_level=WARNING", "threads=1", "figures=false"]
# A file that, once imported, leaves a trace: what a crafted checkpoint would make the analysis execute.
PAYLOAD = '''
    from pathlib import Path
    from torch import nn
    Path({marker!r}).write_text("executed")


    class Payload(nn.Module):
        def __init__(self, num_classes, input_shape, width):
            super().__init__()
            self.flat = nn.Flatten()
            self.fc = nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], num_classes)

        def forward(self, x):
            return self.fc(self.flat(x))
'''
# Users' modules: `Shared` reuses one ReLU inside `body` (fine as a layer, not `body.relu`), `Single` does not,
# `Twice` reuses a top-level ReLU that is one of its default layers, `Broken` fails in __init__.
MODULES = '''
    from torch import nn


    class Body(nn.Module):
        def __init__(self, channels, width, reuse):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(channels, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1)
            self.relu, self.reuse = nn.ReLU(), reuse

        def forward(self, x):
            x = self.relu(self.conv1(x))
            return self.relu(self.conv2(x)) if self.reuse else self.conv2(x)


    class Shared(nn.Module):
        def __init__(self, num_classes, input_shape, width, reuse=True):
            super().__init__()
            self.body = Body(input_shape[0], width, reuse)
            self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

        def forward(self, x):
            return self.fc(self.body(x))


    class Single(Shared):
        def __init__(self, num_classes, input_shape, width):
            super().__init__(num_classes, input_shape, width, reuse=False)


    class Twice(nn.Module):
        def __init__(self, num_classes, input_shape, width):
            super().__init__()
            self.conv = nn.Conv2d(input_shape[0], width, 3, padding=1)
            self.relu = nn.ReLU()
            self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

        def forward(self, x):
            return self.fc(self.relu(self.conv(self.relu(x))))


    class Broken(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            raise RuntimeError("cannot build")
'''


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny mlp run, trained once (each test crafts its own copy)."""
    out = tmp_path_factory.mktemp("trained")
    result = run_cli("train.py", tiny_words(out, *SMALL, "arch=mlp", "depth=2"))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def crafted(trained, tmp_path) -> tuple[Path, Path, int]:
    """A copy of the run whose newest checkpoint's embedded settings say `arch=module:<a file in the run folder>`,
    its manifest sha256 and size updated to match: (run folder, marker the file writes when imported, iteration)."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(trained, out)
    folder = ExperimentFolder.of(out, "default").run_folders()[0]
    marker = tmp_path / "executed.txt"
    payload = folder.path / "payload.py"
    payload.write_text(textwrap.dedent(PAYLOAD.format(marker=str(marker))))
    iteration = max(folder.checkpoint_entries())
    path = folder.checkpoint_path(iteration)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["settings"]["arch"] = f"module:{payload}:Payload"
    checkpoint["settings"]["module_sha256"] = hashlib.sha256(payload.read_bytes()).hexdigest()
    torch.save(checkpoint, path)
    manifest = json.loads(folder.manifest_path.read_text())
    entry = manifest["files"][path.name]
    entry["sha256"], entry["bytes"] = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size
    folder.manifest_path.write_text(json.dumps(manifest))
    return folder.path, marker, iteration


def test_a_checkpoint_whose_settings_differ_from_the_run_is_refused_by_the_analysis(crafted):
    run_dir, marker, iteration = crafted
    out = run_dir.parent.parent.parent
    result = run_cli("analysis.py", [f"out_dir={out}", *QUICK])
    assert not marker.exists(), "the analysis executed a file named by a checkpoint"
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    refusal = [line for line in result.stderr.splitlines() if "settings differ" in line]
    assert len(refusal) == 2 and run_dir.name in refusal[0] and "first differing key: arch" in refusal[0], result.stderr
    table = analysis.read_table(out / "default")  # the other checkpoints are measured
    assert iteration not in set(table["iteration"]) and len(table["iteration"].unique()) >= 3
    similar = run_cli("analysis.py", ["similarity", str(run_dir), str(run_dir)])  # reads the snapshots only
    assert similar.returncode == 0 and not marker.exists(), similar.stderr


def test_a_checkpoint_whose_settings_differ_is_refused_by_features_and_by_a_child_run(crafted, tmp_path, in_process):
    run_dir, marker, iteration = crafted
    result = in_process("analysis.py", ["features", str(run_dir), f"iteration={iteration}", "split=test",
                                        f"out={tmp_path / 'features.npz'}"])
    assert not marker.exists() and result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "first differing key: arch" in result.stderr
    assert not (tmp_path / "features.npz").exists()
    with pytest.raises(CorruptFile, match="first differing key: arch"):  # start_from_iteration's reader
        stages.parent_state(RunFolder(run_dir), iteration)
    with pytest.raises(CorruptFile, match=f"run {run_dir.name}"):  # measure() on a run's checkpoint, from Python
        load_model(RunFolder(run_dir).read_record(), iteration, "cpu")
    assert not marker.exists()


@pytest.fixture(scope="module")
def module_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("user") / "shared_models.py"
    path.write_text(textwrap.dedent(MODULES))
    return path


@pytest.fixture(scope="module")
def module_runs(tmp_path_factory, module_file) -> tuple[Path, str]:
    """Two runs of a user's module, `Shared` and `Single`, trained (not analysed); train.py's stderr."""
    out = tmp_path_factory.mktemp("modules")
    archs = f"module:{module_file}:Shared,module:{module_file}:Single"
    result = run_cli("train.py", tiny_words(out, *SMALL, f"arch={archs}"))
    assert result.returncode == 0, result.stderr
    return out, result.stderr


def test_a_module_file_is_named_on_one_line_each_time_it_is_imported(module_runs, module_file, tmp_path):
    out, train_stderr = module_runs
    assert [line for line in train_stderr.splitlines() if f"importing {module_file}" in line], train_stderr
    copy = tmp_path / "out"
    import shutil

    shutil.copytree(out, copy)
    result = run_cli("analysis.py", [f"out_dir={copy}", *QUICK])
    assert result.returncode == 0, result.stderr
    notices = [line for line in result.stderr.splitlines() if f"importing {module_file}" in line]
    assert len(notices) == 1 and "runs as code" in notices[0], result.stderr


def test_a_layer_that_runs_twice_skips_that_run_and_measures_the_others(module_runs, tmp_path, in_process):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(module_runs[0], out)
    result = in_process("analysis.py", [f"out_dir={out}", "layers=body.relu", *QUICK])
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    skipped = [line for line in result.stderr.splitlines() if "ran 2 times" in line]
    assert skipped and "shared" in skipped[0] and "skipped" in skipped[0], result.stderr
    table = analysis.read_table(out / "default", "layers=body.relu probe_dimensions=32")  # the question it asked
    assert {run.split("-")[0].rstrip("0123456789") for run in table["run_id"]} == {"single"}
    assert "body.relu" in set(table["layer"])


@pytest.mark.parametrize("words, needle", [
    (["layers=body.relu,body.relu"], "names body.relu twice"),
    (["layers=body.nothing"], "no module 'body.nothing'"),
])
def test_bad_layers_are_refused_before_anything_is_written(module_runs, tmp_path, in_process, words, needle):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(module_runs[0], out)
    result = in_process("analysis.py", [f"out_dir={out}", *words, *QUICK])
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert len(refusal_lines(result.stderr)) == 1, result.stderr
    assert not (out / "default" / "metrics").exists() and not (out / "default" / "metrics.parquet").exists()


@pytest.mark.parametrize("target, needle", [
    ("{file}:Twice", "layers=relu ran 2 times"),
    ("{file}:Broken", "Broken.__init__ fails (RuntimeError: cannot build)"),
    ("{text}:Shared", "is not a Python file"),
])
def test_bad_user_modules_are_refused_by_the_pre_flight(module_file, tmp_path, in_process, target, needle):
    text = tmp_path / "shared_models.txt"
    text.write_text(module_file.read_text())
    arch = "module:" + target.format(file=module_file, text=text)
    result = in_process("train.py", tiny_words(tmp_path, *SMALL, f"arch={arch}"))
    assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(refusal_lines(result.stderr)) == 1 and not (tmp_path / "default").exists(), result.stderr
