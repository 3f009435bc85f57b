"""Any model (issue: torchvision builders, the built-in ViT, a user's own nn.Module) through training and
analysis; layers by module path (forward hooks) equal to the built-in walk bit for bit; `metrics.measure`
equal to analysis.py bit for bit on the same checkpoint and data; exact resume after a SIGKILL; bad input."""

import signal
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

import analysis
import models
from conf import Settings
from folders import RunFolder
from measuring.inputs import load_model, splits_of
from metrics import measure, registry
from models.hooked import HookedModel, UnknownLayer
from tests.conftest import read_json, refusal_lines, run_cli, tiny_words
from tests.test_resume import checkpoint_digests, kill_at_call

pytestmark = pytest.mark.slow  # end to end: real runs trained and measured (make test-fast leaves them out)

SMALL = ["image_size=16", "synthetic_train_size=256", "synthetic_test_size=64", "batch_size=32", "epochs=1"]
QUICK = ["probe_dimensions=64", "log_level=WARNING", "probe_subset_size=64"]
USER_MODULE = '''
    from torch import nn


    class TinyNet(nn.Module):
        """Two convs and a linear head, as a user would write one."""

        def __init__(self, width, num_classes, input_shape):
            super().__init__()
            self.conv1 = nn.Sequential(nn.Conv2d(input_shape[0], width, 3, padding=1), nn.ReLU())
            self.conv2 = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Sequential(nn.Flatten(), nn.Linear(width, num_classes))

        def forward(self, x):
            return self.fc(self.pool(self.conv2(self.conv1(x))))


    class WrongInput(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.fc = nn.Linear(5, num_classes)

        def forward(self, x):
            return self.fc(x)


    NOT_A_MODULE = object
'''
ARCHS = ["torchvision:resnet18", "torchvision:mobilenet_v3_small", "vit"]


@pytest.fixture(scope="module")
def user_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("user") / "my_models.py"
    path.write_text(textwrap.dedent(USER_MODULE))
    return path


@pytest.fixture(scope="module")
def measured(tmp_path_factory, user_file) -> Path:
    """One short run of each kind, trained and analysed with default options (the grid: one train.py call, its
    main() in this process: no interpreter to start, no torch to import; the analysis a process of its own, so that
    test_measure_equals_analysis_bitwise compares two processes); the figures and the report are drawn by the one
    test that looks at them (`analysis.py figures`)."""
    import train

    out = tmp_path_factory.mktemp("any")
    archs = ",".join([*ARCHS, f"module:{user_file}:TinyNet"])
    assert train.main(tiny_words(out, *SMALL, f"arch={archs}", "depth=2", "width=16", "heads=2")) == 0
    result = run_cli("analysis.py", [f"out_dir={out}", "threads=1", "log_level=WARNING",  # default options; 1 thread
                                     "figures=false"])  # as here; figures: in no recipe
    assert result.returncode == 0, result.stderr
    return out


def run_of(out: Path, prefix: str) -> Path:
    (run,) = [path for path in (out / "default" / "runs").iterdir() if path.name.startswith(prefix)]
    return run


def test_every_kind_trains_and_is_measured_layer_by_layer(measured, in_process):
    table = analysis.read_table(measured / "default")
    layers = {run: list(rows.sort_values("layer_index")["layer"].unique())
              for run, rows in table[table["metric"] == "ncc_accuracy"].groupby("run_id")}
    by_prefix = {prefix: next(names for run, names in layers.items() if run.startswith(prefix))
                 for prefix in ("resnet18", "mobilenet_v3_small", "vit2", "tinynet-w16")}
    assert by_prefix["resnet18"] == ["input", "layer1", "layer2", "layer3", "layer4", "logits"]
    assert by_prefix["mobilenet_v3_small"][1:3] == ["features.0", "features.1"]
    assert by_prefix["vit2"] == ["input", "stem", "block00", "block01", "logits"]
    assert by_prefix["tinynet-w16"] == ["input", "conv1", "conv2", "pool", "logits"]
    assert {"nc1", "cka_previous_layer", "effective_rank", "transfer_accuracy"} <= set(table["metric"])
    assert table["value"].notna().any() and len(table["run_id"].unique()) == 4
    tinynet = read_json(run_of(measured, "tinynet-w16") / "settings.json")["settings"]
    assert tinynet["module_sha256"] and tinynet["arch"].startswith("module:/")  # the file's path made absolute
    # every figure and the report from this table, each figure in a process of its own (threads unset: the cores)
    drawn = in_process("analysis.py", ["figures", f"out_dir={measured}", "log_level=WARNING"])
    assert drawn.returncode == 0, drawn.stderr
    assert (measured / "default" / "figures" / "ncc_by_layer.png").exists()


@pytest.mark.parametrize("normalization", ["the run's", "default"])
@pytest.mark.parametrize("prefix", ["resnet18", "vit2"])
def test_measure_equals_analysis_bitwise(measured, prefix, normalization):
    """The Python API on a run's checkpoint and the data it trained on gives the table's values exactly, given
    the run's dataset's mean and std or none: its default is the same rule (data.channel_statistics)."""
    run = RunFolder(run_of(measured, prefix)).read_record()
    settings = run.settings
    train, test, classes = splits_of(run, Path("datasets"), False, torch.device("cpu"))
    _, model = load_model(run, 8, "cpu")
    names = [name for name in registry.select("all") if not any(need.endswith(":transfer") for need in registry.METRICS[name].needs)]
    given = {"normalization": (train.mean, train.std)} if normalization == "the run's" else {}
    rows = measure(model, train=(train.images, train.labels), test=(test.images, test.labels), metrics=names,
                   device="cpu", seed=settings.seed, num_classes=classes, **given)
    table = analysis.read_table(measured / "default")
    stored = table[(table["run_id"] == settings.run_id) & (table["iteration"] == 8) & table["metric"].isin(names)]
    key = ["layer", "metric", "split"]
    joined = rows.merge(stored[[*key, "value"]], on=key, suffixes=("", "_stored"), validate="one_to_one")
    assert len(joined) == len(stored) == len(rows)
    same = (joined["value"] == joined["value_stored"]) | (joined["value"].isna() & joined["value_stored"].isna())
    assert same.all(), joined[~same]


def test_layers_by_module_path_equal_the_built_in_walk_bitwise():
    """Hooks on a built-in model's own modules give its features exactly, and so the same metric values."""
    torch.manual_seed(0)
    model = models.build(Settings(arch="convnet", depth=2, width=8), input_shape=(3, 16, 16), num_classes=10).eval()
    hooked = HookedModel(model, ["stem", "blocks.0", "blocks.1"])
    images = torch.randn(40, 3, 16, 16)
    walked, read = model.features(images), hooked.features(images)
    for built_in, path in (("stem", "stem"), ("block00", "blocks.0"), ("block01", "blocks.1"), ("logits", "logits")):
        assert torch.equal(walked[built_in], read[path]), path
    labels = torch.arange(40) % 10
    split = ((images * 0.25).clamp(-1, 1), labels)
    names = ["ncc_accuracy", "cdnv", "nc1", "probe_accuracy", "reconstruction_mse", "effective_rank"]
    own = measure(model, train=split, test=split, metrics=names, device="cpu", probe_dimensions=32)
    hooks = measure(model, train=split, test=split, layers=["stem", "blocks.0", "blocks.1"], metrics=names,
                    device="cpu", probe_dimensions=32)
    rename = {"blocks.0": "block00", "blocks.1": "block01"}
    hooks["layer"] = hooks["layer"].replace(rename)
    pd.testing.assert_frame_equal(own.reset_index(drop=True), hooks.reset_index(drop=True))


def test_hooks_are_removed_after_every_pass_and_on_error():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    hooked = HookedModel(module, ["1", "2"])
    hooked.features(torch.randn(2, 3, 2, 2))
    assert all(not part._forward_hooks for part in module.modules())
    with pytest.raises(RuntimeError):
        hooked.features(torch.randn(2, 5))  # a forward pass that fails
    assert all(not part._forward_hooks for part in module.modules())
    with pytest.raises(UnknownLayer, match=r"no module 'lin'.*accepted: module paths such as 0, 1, 2, 3"):
        HookedModel(module, ["lin"])


@pytest.mark.parametrize("arch", ["torchvision:mobilenet_v3_small", "vit"])
def test_sigkill_at_a_counted_batch_resumes_bitwise(tmp_path, arch, in_process):
    """The reference and the restart by train.py's main() in this process, the killed run in a process forked from
    tests/test_resume.py's server (as its test_sigkill_at_counted_moments_resumes_bitwise)."""
    words = [*SMALL, "epochs=2", f"arch={arch}", "depth=2", "width=16", "heads=2", "resume_every_seconds=0"]
    assert in_process("train.py", tiny_words(tmp_path / "reference", *words)).returncode == 0
    _, expected = checkpoint_digests(tmp_path / "reference")
    interrupted = tiny_words(tmp_path / "interrupted", *words)
    assert kill_at_call(interrupted, "data.stream.TrainingStream", "batch", 6, False) == -signal.SIGKILL
    assert in_process("train.py", interrupted).returncode == 0
    assert checkpoint_digests(tmp_path / "interrupted")[1] == expected


@pytest.mark.parametrize("arch, needle", [
    ("torchvision:resnet19", "arch=torchvision:resnet19 is unknown to torchvision"),  # through `python train.py`
    ("module:{file}:Missing", "has no class Missing; accepted: one of its nn.Module classes (TinyNet, WrongInput)"),
    ("module:{file}:NOT_A_MODULE", "NOT_A_MODULE is not an nn.Module subclass"),
    ("module:{file}:WrongInput", "its forward pass fails on the dataset's 3x16x16 images"),
    ("module:{missing}:TinyNet", "cannot be read (No such file or directory)"),
])
def test_bad_models_are_refused_in_one_line(tmp_path, user_file, in_process, arch, needle):
    """The first case through `python train.py` as typed; the others by its main() in this process."""
    run = run_cli if arch == "torchvision:resnet19" else in_process
    arch = arch.format(file=user_file, missing=tmp_path / "nothing.py")
    result = run("train.py", tiny_words(tmp_path, *SMALL, f"arch={arch}"))
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert len(refusal_lines(result.stderr)) == 1 and not (tmp_path / "default").exists()


def test_unknown_layers_and_a_changed_module_file_are_refused(measured, user_file, tmp_path, in_process):
    result = in_process("analysis.py", [f"out_dir={measured}", "arch=torchvision:resnet18", "layers=layer1,layer9",
                                        "metrics=ncc_accuracy", *QUICK])
    assert result.returncode == 2 and "no module 'layer9'" in result.stderr and "layer1" in result.stderr
    changed = tmp_path / "out"
    copy = tmp_path / "my_models.py"
    copy.write_text(user_file.read_text())
    assert run_cli("train.py", tiny_words(changed, *SMALL, f"arch=module:{copy}:TinyNet", "width=8")).returncode == 0
    copy.write_text(user_file.read_text() + "\n# edited\n")
    result = in_process("analysis.py", [f"out_dir={changed}", *QUICK])
    assert result.returncode == 1 and "changed since the run was made" in result.stderr
    assert not list((changed / "default").glob("metrics/*/*.parquet"))  # nothing measured


def fabricated_checkpoints(folder: Path, widths=(8, 8, 8), name="step_{}.pt") -> Path:
    """State dicts as another training script would save them: a torchvision-style dict under "model"."""
    folder.mkdir(parents=True, exist_ok=True)
    for iteration, width in zip((0, 16, 64), widths):
        torch.manual_seed(iteration)
        model = models.build(Settings(arch="convnet", depth=2, width=width), input_shape=(3, 16, 16), num_classes=10)
        torch.save({"model": model.state_dict(), "optimizer": None}, folder / name.format(iteration))
    return folder


IMPORT_SETTINGS = ["arch=convnet", "depth=2", "width=8", *SMALL]


def test_an_imported_folder_of_state_dicts_is_analysed(tmp_path, in_process):
    source = fabricated_checkpoints(tmp_path / "elsewhere")
    result = run_cli("analysis.py", ["import", str(source), *IMPORT_SETTINGS, f"out_dir={tmp_path}"])
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "default" / "runs").iterdir()
    manifest = read_json(run / "manifest.json")
    assert sorted(entry["iteration"] for entry in manifest["files"].values()) == [0, 16, 64]
    assert read_json(run / "status.json")["state"] == "done"
    weights = torch.load(run / "checkpoints" / "iteration_00000016.pt", weights_only=True)["model"]
    original = torch.load(source / "step_16.pt", weights_only=True)["model"]
    assert all(torch.equal(weights[key], original[key]) for key in original)  # the very weights
    trained_here = Settings(arch="convnet", depth=2, width=8, image_size=16, synthetic_train_size=256,
                            synthetic_test_size=64, batch_size=32, epochs=1)
    assert run.name != trained_here.run_id  # the same settings trained here are another run
    measured = in_process("analysis.py", [f"out_dir={tmp_path}", "threads=1", *QUICK])  # the report: figures on
    assert measured.returncode == 0, measured.stderr
    table = analysis.read_table(tmp_path / "default")
    assert sorted(table["iteration"].unique()) == [0, 16, 64] and "ncc_accuracy" in set(table["metric"])
    assert (tmp_path / "default" / "report.html").exists()


@pytest.mark.parametrize("case, needle", [
    ("empty", "holds no checkpoint"),
    ("mixed", "is of another architecture than the first file (first differing key: blocks.0.conv.weight)"),
    ("misfit", "does not fit the arch=convnet model of these settings: it has stem.first.conv.weight of shape (16, 3, 2, 2), the model's is (8, 3, 2, 2)"),
])
def test_bad_imports_are_refused_in_one_line_and_write_nothing(tmp_path, in_process, case, needle):
    source = tmp_path / "elsewhere"
    if case == "empty":
        source.mkdir()
        (source / "notes.txt").write_text("no checkpoints here")
    else:
        fabricated_checkpoints(source, widths=(8, 16, 8) if case == "mixed" else (16, 16, 16))
    result = in_process("analysis.py", ["import", str(source), *IMPORT_SETTINGS, f"out_dir={tmp_path / 'out'}"])
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


# The recipes under the default analysis options, pinned: a recipe that changes makes every cell of its metric
# stale, so each experiment measures it again; a change must be deliberate (the metric's version, or the engine's).
PINNED_RECIPES = {"cka_full": "e8433e5f269e", "classifier_accuracy_batch_statistics": "d9436ec645a9", "cdnv": "985cf2d7ef0d", "cka_previous_layer": "b39b2193d73f", "classifier_accuracy": "dd88e2416195", "classifier_loss": "91afc3299246", "dormant_fraction": "d7af24b17ef4", "effective_depth": "4e04afab4b4f", "effective_depth_literal": "9691e7be7255", "effective_rank": "5b6e9abd7db8", "feature_norm": "afec0957ea7a", "nc1": "e53dabbbf4c8", "nc2_equiangularity": "b976dc929b8b", "nc2_equinorm": "c977c580eb73", "nc2_etf_distance": "73f44b8db0dd", "nc3_self_duality": "5fb30d8c5c35", "nc4_ncc_agreement": "e67f90a7f91f", "ncc_accuracy": "f4637984e7bb", "probe_accuracy": "bd5753aa797e", "reconstruction_mse": "8abb1f188628", "srank": "0c8c76b5b30a", "transfer_accuracy": "f5ad8ba9242b"}


def test_the_built_in_families_keep_their_recipes_and_row_order():
    from conf.analysis import Analysis

    assert registry.recipes(Analysis()) == PINNED_RECIPES
    assert list(registry.METRICS) == [
        "ncc_accuracy", "cdnv", "probe_accuracy", "transfer_accuracy", "reconstruction_mse", "classifier_loss",
        "classifier_accuracy", "classifier_accuracy_batch_statistics", "effective_depth", "effective_depth_literal", "dormant_fraction", "feature_norm",
        "effective_rank", "srank", "nc1", "nc2_equinorm", "nc2_equiangularity", "nc2_etf_distance", "nc4_ncc_agreement", "nc3_self_duality",
        "cka_previous_layer", "cka_full"]


@pytest.mark.parametrize("arch", ["torchvision:resnet18", "torchvision:mobilenet_v3_small", "torchvision:vit_b_16"])
def test_a_grayscale_28_pixel_input_gets_the_first_conv_rebuilt(arch):
    """MNIST-shaped inputs (1 × 28 × 28): the first convolution takes one channel; every layer yields a tensor
    (a ViT builder gets the image side, 28 not divisible by its patch 16 is refused in one line)."""
    settings = Settings(arch=arch)
    if arch.endswith("vit_b_16"):
        with pytest.raises(ValueError, match="cannot be built for 1x28x28 images"):
            models.build(settings, input_shape=(1, 28, 28), num_classes=10)
        return
    torch.manual_seed(0)
    model = models.build(settings, input_shape=(1, 28, 28), num_classes=10).eval()
    with torch.no_grad():
        features = model.features(torch.randn(2, 1, 28, 28))
    assert features["logits"].shape == (2, 10) and len(features) == len(model.layer_names())
