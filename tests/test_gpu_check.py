"""benchmarks/gpu_check.py smoke: the prepared device check runs every section's code path on the CPU, prints
each section's header and table, and its SIGKILL resume check finds the resumed run bitwise equal."""

import importlib.util
import re
import signal
import sys

import pytest
import torch

from tests.conftest import REPOSITORY, run_cli

pytestmark = pytest.mark.slow

SCRIPT = "benchmarks/gpu_check.py"
# Each section's title, and a row its table must hold on the CPU.
SECTIONS = {
    "1. Environment": r"\| device \(as a resume state records it\) \| cpu",
    "2. Training throughput": r"\| CONV-2-8 \| bf16\+channels_last \| [\d.]+ \| [\d.]+ \|",
    "3. Host syncs": r"\| analysis of one checkpoint: .* \| \d+ batches \| \d+ \|",
    "4. SIGKILL resume": r"\| true \| by SIGKILL, in batch \d+ \| \d+ of \d+ \(running\) \| (\d+)/\1 \| yes \|",
    "5. Analysis ÷ forward pass": r"\| metrics\.engine\.measure, every default metric \| [\d.]+ \| [\d.]+× \|",
    "6. Runs in parallel": r"\| 2 \| 2 × 1 \| [\d.]+ \| [\d,]+ \| [\d.]+× \| not used \| 2/2 \|",
}


@pytest.fixture(scope="module")
def gpu_check():
    """benchmarks/gpu_check.py as a module (benchmarks/ is no package): its main(words) runs here what
    `python benchmarks/gpu_check.py <words>` runs, less the interpreter's start (its sections are processes of
    their own all the same)."""
    spec = importlib.util.spec_from_file_location("gpu_check", REPOSITORY / SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_here(gpu_check, capsys, words: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of gpu_check.main(words) in this process; the SIGTERM handler it installs for
    its sections is taken away again."""
    capsys.readouterr()
    handler = signal.getsignal(signal.SIGTERM)
    try:
        code = gpu_check.main(words)
    finally:
        signal.signal(signal.SIGTERM, handler)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sections_of(report: str) -> dict[str, str]:
    """{title: the section's text} of a printed report (a section runs from its `## ` header to the next)."""
    parts = re.split(r"^## ", report, flags=re.MULTILINE)[1:]
    return {re.sub(r" \([\d.]+ s\)$", "", part.splitlines()[0]): part for part in parts}


def test_smoke_prints_every_section_and_resumes_bitwise(tmp_path, gpu_check, capsys):
    """Exit 0; every section's header, table and expected row, printed and in out=FILE.md alike; the resume
    check, with deterministic kernels on, finds every checkpoint and the final weights bitwise equal."""
    out = tmp_path / "gpu_check.md"
    code, printed, errors = run_here(gpu_check, capsys, ["smoke", f"out={out}"])
    assert code == 0, printed[-4000:] + errors[-2000:]
    for report in (printed, out.read_text()):
        sections = sections_of(report)
        assert list(sections) == list(SECTIONS)
        for title, row in SECTIONS.items():
            assert re.search(r"^\|(---\|)+$", sections[title], flags=re.MULTILINE), title  # a markdown table
            assert re.search(row, sections[title]), (title, sections[title])
            assert "**error:**" not in sections[title], sections[title]
        assert "deterministic=true: bitwise equal: yes" in sections["4. SIGKILL resume"]
        assert "all 6 sections completed" in report


def test_bad_input_is_one_line_and_exit_2(tmp_path, gpu_check, capsys):
    """An unknown word, or out= in a folder that does not exist: one line naming it, exit 2, nothing written."""
    for words, named in ((["smok"], "smok"), ([f"out={tmp_path / 'missing' / 'x.md'}"], "missing")):
        code, printed, errors = run_here(gpu_check, capsys, words)
        assert code == 2
        assert len(errors.strip().splitlines()) == 1 and named in errors
        assert printed == ""
    assert list(tmp_path.iterdir()) == []


def test_bad_input_on_the_real_command_line_is_one_line_and_exit_2():
    """The refusal above through `python benchmarks/gpu_check.py` itself, once."""
    result = run_cli(SCRIPT, ["smok"], timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == ["error: unknown argument 'smok'; accepted: smoke, out=FILE.md"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the plain command starts the full device check")
def test_without_a_gpu_the_full_check_refuses_in_one_line(gpu_check, capsys):
    code, _, errors = run_here(gpu_check, capsys, [])
    assert code == 1
    assert len(errors.strip().splitlines()) == 1 and "smoke" in errors
