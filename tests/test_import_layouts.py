"""`python analysis.py import DIR ...` on checkpoints as people save them (the import layouts): a plain
`{model, optimizer}` dict, a bare state dict, DistributedDataParallel's `module.` prefix, torch.compile's
`_orig_mod.` (and both), PyTorch Lightning's `.ckpt` (`state_dict` under the LightningModule's attribute
`model.`, `global_step`), and `last`/`best` files beside the numbered ones. Each folder is written here
from tiny models, imported in this process, and the run's weights compared with the models' own; what
is passed over is listed at the end, one line each with why."""

from pathlib import Path

import pytest
import torch

import analysis
import models
from conf import Settings
from folders import ExperimentFolder
from tests.test_any_model import IMPORT_SETTINGS

ITERATIONS = (0, 16, 64)
PREFIXES = {"plain": "", "bare": "", "ddp": "module.", "compile": "_orig_mod.", "ddp_compile": "module._orig_mod.",
            "lightning": "model."}
# Who adds each layout's prefix, as the one line naming it says.
WHO = {"ddp": "DistributedDataParallel/DataParallel", "compile": "torch.compile",
       "ddp_compile": "DistributedDataParallel/DataParallel, torch.compile",
       "lightning": "a wrapping module's attribute 'model', as a LightningModule's"}


def tiny_model(seed: int, width: int = 8, depth: int = 2) -> torch.nn.Module:
    """The model IMPORT_SETTINGS build (convnet, depth 2, width 8, 16x16 images), with weights of its own."""
    torch.manual_seed(seed)
    return models.build(Settings(arch="convnet", depth=depth, width=width), input_shape=(3, 16, 16), num_classes=10)


def with_prefix(state: dict, prefix: str) -> dict:
    return {prefix + key: tensor for key, tensor in state.items()}


def lightning_checkpoint(state: dict, step: int, prefix: str = "model.") -> dict:
    """What Lightning's ModelCheckpoint saves: the LightningModule's state dict (the network under its
    attribute's name) beside the loop's counters, the optimizer's state and the hyperparameters."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
    return {"epoch": step // 16, "global_step": step, "pytorch-lightning_version": "2.4.0",
            "state_dict": with_prefix(state, prefix), "loops": {}, "callbacks": {},
            "optimizer_states": [optimizer.state_dict()], "lr_schedulers": [], "hyper_parameters": {"lr": 0.1}}


def save_in_layout(folder: Path, layout: str, iteration: int, state: dict) -> None:
    """One checkpoint as `layout` saves it, named as its tool names it."""
    if layout == "lightning":
        torch.save(lightning_checkpoint(state, iteration), folder / f"epoch={iteration // 16}-step={iteration}.ckpt")
        return
    state = with_prefix(state, PREFIXES[layout])
    torch.save(state if layout == "bare" else {"model": state, "optimizer": None}, folder / f"step_{iteration}.pt")


def written_folder(folder: Path, layout: str) -> dict[int, dict]:
    """A folder of three checkpoints in `layout`; {iteration: the model's own state dict}."""
    folder.mkdir(parents=True, exist_ok=True)
    states = {iteration: tiny_model(iteration).state_dict() for iteration in ITERATIONS}
    for iteration, state in states.items():
        save_in_layout(folder, layout, iteration, state)
    return states


def import_here(capsys, source: Path, out_dir: Path) -> tuple[int, str, list[str]]:
    """analysis.main in this process: (exit code, stdout, stderr's lines)."""
    code = analysis.main(["import", str(source), *IMPORT_SETTINGS, f"out_dir={out_dir}", "threads=1"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def imported_states(out_dir: Path) -> dict[int, dict]:
    """{iteration: the weights in the imported run's checkpoint}, for the one run in out_dir."""
    (run,) = ExperimentFolder(out_dir / "default").run_folders()
    return {iteration: torch.load(run.checkpoint_path(iteration), weights_only=True)["model"]
            for iteration in sorted(run.checkpoint_entries())}


def assert_same_weights(imported: dict[int, dict], expected: dict[int, dict]) -> None:
    assert sorted(imported) == sorted(expected)
    for iteration, state in expected.items():
        assert list(imported[iteration]) == list(state), iteration
        assert all(torch.equal(imported[iteration][key], tensor) for key, tensor in state.items()), iteration


@pytest.mark.parametrize("layout", PREFIXES)
def test_each_layout_is_imported_with_the_models_own_weights(tmp_path, capsys, layout):
    expected = written_folder(tmp_path / "elsewhere", layout)
    code, printed, errors = import_here(capsys, tmp_path / "elsewhere", tmp_path / "out")
    assert code == 0 and errors == [], errors
    assert_same_weights(imported_states(tmp_path / "out"), expected)
    said = [line for line in printed.splitlines() if "stripped the key prefix" in line]
    prefix = PREFIXES[layout]
    assert said == ([f"import: stripped the key prefix {prefix!r} ({WHO[layout]}) from every key of 3 of 3 file(s): "
                     "the keys are then the model's own"] if prefix else []), printed


def test_last_and_best_files_are_placed_by_their_stored_step_or_listed_at_the_end(tmp_path, capsys):
    """Numbered files by their names; a file whose name holds no number by the step it stores (Lightning's
    global_step) unless another file has that iteration already (a copy); the rest listed, one line each."""
    source = tmp_path / "elsewhere"
    expected = written_folder(source, "plain")
    last = tiny_model(99).state_dict()
    torch.save({"model": expected[64], "optimizer": None}, source / "last.pt")  # no step stored: unplaceable
    torch.save({"model": expected[16], "step": 16}, source / "best.pt")  # a copy of step_16.pt
    torch.save(lightning_checkpoint(last, 80), source / "last.ckpt")  # no number in its name: its global_step
    torch.save(lightning_checkpoint(expected[64], 64), source / "last-v1.ckpt")  # Lightning's second last.ckpt
    optimizer = torch.optim.SGD(tiny_model(0).parameters(), lr=0.1, momentum=0.9)
    torch.save(optimizer.state_dict(), source / "optimizer_16.pt")  # beside step_16.pt: no state dict
    code, printed, errors = import_here(capsys, source, tmp_path / "out")
    assert code == 0, errors
    assert_same_weights(imported_states(tmp_path / "out"), {**expected, 80: last})
    assert errors == [f"import: ignored {source / 'best.pt'}: its step 16 is the iteration of step_16.pt already "
                      "(a copy of it, such as last or best)",
                      f"import: ignored {source / 'last-v1.ckpt'}: its global_step 64 is the iteration of step_64.pt "
                      "already (a copy of it, such as last or best)",
                      f"import: ignored {source / 'last.pt'}: no iteration in its name nor a stored "
                      "global_step/iteration/step; map it to its iteration in an index.json to import it",
                      f"import: ignored {source / 'optimizer_16.pt'}: not a checkpoint: torch loads it, but it holds no "
                      "state dict (a dict of tensors, or one under model or state_dict): an optimizer's state or "
                      "settings?"]
    assert printed.splitlines()[-1].startswith("imported 4 checkpoint(s) (iterations 0, 16, 64, 80)"), printed


def test_a_file_of_another_model_is_skipped_exit_1_and_the_rest_imported(tmp_path, capsys):
    source = tmp_path / "elsewhere"
    expected = written_folder(source, "ddp")
    torch.save(torch.nn.Linear(4, 2).state_dict(), source / "discriminator_32.pt")
    code, _, errors = import_here(capsys, source, tmp_path / "out")
    assert code == 1
    assert_same_weights(imported_states(tmp_path / "out"), expected)
    assert errors == [f"import: skipped {source / 'discriminator_32.pt'}: it does not fit the arch=convnet model of "
                      "these settings: its keys are not the model's (unexpected: weight, bias; missing: "
                      "stem.first.conv.weight, stem.first.norm.weight, stem.first.norm.bias and 23 more); type the "
                      "settings that built it (arch, depth, width, ...), or save the model's own state_dict()"]


def misfit_folder(folder: Path, case: str) -> None:
    """Three files none of which loads into the settings' model, as `case` says why."""
    folder.mkdir(parents=True)
    for iteration in ITERATIONS:
        model = tiny_model(iteration, depth=3 if case == "deeper" else 2)
        state = model.state_dict()
        if case == "extra_module":  # a LightningModule holding a loss with weights beside its network
            checkpoint = lightning_checkpoint(state, iteration)
            checkpoint["state_dict"]["criterion.weight"] = torch.ones(10)
            torch.save(checkpoint, folder / f"epoch=0-step={iteration}.ckpt")
        else:
            torch.save(model if case == "whole_module" else state, folder / f"step_{iteration}.pt")


@pytest.mark.parametrize("case, needles", [
    ("extra_module", ["epoch=0-step=0.ckpt does not fit the arch=convnet model", "its keys under 'model.' are the "
                      "model's, beside others (criterion.weight); save that part alone: {key.removeprefix('model.')"]),
    ("deeper", ["step_0.pt does not fit", "unexpected: blocks.2.conv.weight", "missing: none",
                "type the settings that built it (arch, depth, width, ...)"]),
    ("whole_module", ["step_0.pt is not a state dict torch loads safely (UnpicklingError: Unsupported global: "
                      "GLOBAL models.convnet.ConvNet was not an allowed global by default.)",
                      "torch.save(model.state_dict(), path)"]),
])
def test_no_file_that_fits_is_refused_in_one_line_naming_keys_and_the_fix(tmp_path, capsys, case, needles):
    misfit_folder(tmp_path / "elsewhere", case)
    code, printed, errors = import_here(capsys, tmp_path / "elsewhere", tmp_path / "out")
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: import: "), errors
    assert all(needle in errors[0] for needle in needles), errors[0]
    assert printed == "" and not (tmp_path / "out").exists()
