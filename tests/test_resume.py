"""Exact resume (DESIGN.md contract 4): a run killed at any moment — including in the middle of a
save — and restarted ends with the same bytes as one never interrupted."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from folders import RunFolder
from tests.conftest import REPOSITORY, read_json, tiny_words
from training import loop
from utils import sha256_file

pytestmark = pytest.mark.slow

# 32 iterations per epoch, 128 in all; a resumable state after every iteration, so kills land in saves.
WORDS = ["synthetic_train_size=1024", "epochs=4", "augment=true", "label_noise=0.1", "lr_milestones=[2]",
         "resume_every_seconds=0"]

# Runs train.py in processes that each SIGKILL themselves at the Nth call (counted from their start) of one function:
#   os.replace                         after a temporary is fully written, before it replaces the real file
#                                      (settings, manifest, checkpoint, resume state, hash, status...): the
#                                      worst moment of a save;
#   data.stream.TrainingStream.batch   in the middle of a training step, between two saves;
#   folders.RunFolder.append_log with half a log line written, as a kill inside write() leaves it.
# Counted events, not clocks: where each kill lands does not depend on how fast or busy the machine is.
#
# The processes are forked from one interpreter (FORK_SERVER) that imported train.py and analysis.py once: each is
# a real process of its own, with a fresh copy of what a fresh `python train.py` has at its start (its death by
# SIGKILL runs no finally block and flushes nothing; a hang is contained), without an interpreter's start and
# torch's import per process (seconds each on a busy 2-CPU machine). For each request on its stdin (a JSON line:
# the script, its words, the hook or null, where its stdout and stderr go, seconds before SIGALRM ends it) the
# server forks, the child runs the script's main(words) and exits with its code, and the server writes that code
# as subprocess reports it. The imports call none of the functions counted: the counts are those of a fresh start.
FORK_SERVER = """
import json, os, signal, sys
sys.path.insert(0, {repository!r})
import folders, data.stream  # torch first, as in pytest's process: every resume state records how idle threads
import analysis, train        # wait (conf/cpu_waiting.py), and a state saved here must be byte-equal to one saved there
# what a run imports on its way (torch.optim its compiler at the first optimizer, 2 s; the event files' protobufs):
# once here rather than in every process
import torch._dynamo, tensorboard.compat.proto.event_pb2
for request in sys.stdin:
    script, words, hook, outputs, seconds = json.loads(request)
    pid = os.fork()
    if pid == 0:
        for descriptor, path in zip((1, 2), outputs):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), descriptor)
        signal.alarm(seconds)
        if hook:
            owner, name, n, half_line, signal_number = hook
            owner = eval(owner)
            real, count = getattr(owner, name), [0]
            def hooked(*arguments, **keywords):
                count[0] += 1
                if count[0] == n:
                    if half_line:
                        folder, records = arguments
                        with open(folder.log_path, "a") as handle:
                            handle.write(json.dumps(records[0])[:40])
                    os.kill(os.getpid(), signal_number)
                return real(*arguments, **keywords)
            setattr(owner, name, hooked)
        code = {{"train.py": train.main, "analysis.py": analysis.main}}[script](words)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status), flush=True)
"""
# (owner, function, N, half a log line?) of each killed process, in order. A step saves its state (state, hash,
# status: 3 renames), so a process killed at its Nth rename saved fewer than N / 3 steps, one killed at its Nth
# batch or append N - 1: 23 + 48 + 8 = 79 of the 128 steps at most, so the run is still partial after the
# last kill on any machine (70 here).
KILLS = [*(("os", "replace", n, False) for n in (3, 7, 12, 20, 33)),
         *(("data.stream.TrainingStream", "batch", n, False) for n in (5, 17, 29)),
         ("folders.RunFolder", "append_log", 9, True)]


def checkpoint_digests(out_dir):
    (run_dir,) = (out_dir / "default" / "runs").iterdir()
    manifest = read_json(run_dir / "manifest.json")
    return run_dir, {name: entry["sha256"] for name, entry in manifest["files"].items()}


def state_of(run_dir):
    return status_of(run_dir).get("state", "new")


def status_of(run_dir):
    path = run_dir / "status.json"
    return read_json(path) if path.exists() else {}


@contextlib.contextmanager
def fork_server(cpus: set[int] | None = None):
    """`with fork_server() as run: run("train.py", words)`: the script's main(words) in a process forked from
    FORK_SERVER, read as run_cli's result (returncode, stdout, stderr); `hook=(owner, function, N, half a log
    line?, signal)` makes it send itself the signal at the Nth call of owner.function; a process still running
    after `seconds` is ended by SIGALRM (returncode -14). Every process runs on the CPUs `cpus` alone, as `taskset`
    would (None = this process's)."""
    with tempfile.TemporaryDirectory(prefix="fork-server-") as folder, open(Path(folder) / "server.log", "w+") as log:
        folder = Path(folder)
        server = subprocess.Popen([sys.executable, "-c", FORK_SERVER.format(repository=str(REPOSITORY))],
                                  cwd=REPOSITORY, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                  preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus))

        def run(script: str, words, hook=None, seconds: int = 300) -> subprocess.CompletedProcess:
            outputs = [str(folder / "stdout"), str(folder / "stderr")]
            request = [script, list(words), hook and [*hook[:4], int(hook[4])], outputs, seconds]
            server.stdin.write(json.dumps(request) + "\n")
            server.stdin.flush()
            code = server.stdout.readline()
            if not code:  # the server itself failed
                log.seek(0)
                raise AssertionError(log.read()[-3000:])
            printed = (Path(path).read_text() for path in outputs)
            return subprocess.CompletedProcess([script, *words], int(code), *printed)

        try:
            yield run
        finally:
            server.stdin.close()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:  # a process still running (its alarm not yet due): not left behind
                server.kill()
                server.wait()
            server.stdout.close()


@contextlib.contextmanager
def kill_server(cpus: set[int] | None = None):
    """`with kill_server() as kill: kill(words, owner, name, n, half_line)`: train.py run with `words` in a process
    of its own (fork_server) until it sends itself `signal_number` (SIGKILL unless named) at the nth call of
    owner.name; its exit code."""
    with fork_server(cpus) as run:
        yield lambda words, owner, name, n, half_line, signal_number=signal.SIGKILL: run(
            "train.py", words, hook=(owner, name, n, half_line, signal_number)).returncode


def kill_at_call(words, owner: str, name: str, n: int, half_line: bool, cpus: set[int] | None = None,
                 signal_number: int = signal.SIGKILL) -> int:
    """One process of kill_server's: its exit code."""
    with kill_server(cpus) as kill:
        return kill(words, owner, name, n, half_line, signal_number)


def test_sigkill_at_counted_moments_resumes_bitwise(tmp_path, in_process):
    """SIGKILLs inside saves, mid-step and mid-log-line, then a plain restart: every checkpoint and the log
    are byte-identical to an uninterrupted run's."""
    reference_dir, interrupted_dir = tmp_path / "reference", tmp_path / "interrupted"
    assert in_process("train.py", tiny_words(reference_dir, *WORDS)).returncode == 0
    reference_run, reference = checkpoint_digests(reference_dir)
    words = tiny_words(interrupted_dir, *WORDS)
    run_dir = interrupted_dir / "default" / "runs" / reference_run.name
    with kill_server() as kill:
        for owner, name, n, half_line in KILLS:
            assert kill(words, owner, name, n, half_line) == -signal.SIGKILL, (owner, name, n)
    assert not (run_dir / "log.jsonl").read_text().endswith("\n")  # the last kill left half a line
    status = status_of(run_dir)
    assert status["state"] == "running" and 0 < status["iteration"] < status["total_iterations"]
    final = in_process("train.py", words)  # a plain restart, in another process than the killed ones
    assert final.returncode == 0, final.stderr
    assert state_of(run_dir) == "done"
    _, resumed = checkpoint_digests(interrupted_dir)
    assert resumed == reference  # every checkpoint, byte for byte: weights, iteration, settings
    last = max(reference)
    weights = torch.load(run_dir / "checkpoints" / last, weights_only=True)["model"]
    expected = torch.load(reference_run / "checkpoints" / last, weights_only=True)["model"]
    assert all(torch.equal(weights[name], expected[name]) for name in expected)
    assert (run_dir / "log.jsonl").read_text() == (reference_run / "log.jsonl").read_text()
    assert not list(run_dir.rglob("*.tmp-*"))


# The example: its checkpoints differ from iteration 1 on between one and two CPU threads.
NODE_WORDS = ["arch=mlp", "depth=2", "width=16", "epochs=2", "seed=4", "synthetic_train_size=1024",
              "synthetic_test_size=64", "image_size=16", "progress=off", "resume_every_seconds=0"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to change what a resume is given")
def test_a_run_started_on_one_core_resumes_on_two_with_its_one_thread_bitwise(tmp_path, in_process):
    """A requeue onto a node with more cores: the run, started where one CPU was visible (CPU affinity) and
    SIGKILLed at a counted batch, resumes where two are, keeps its one recorded thread (and says so), and
    ends bitwise equal to the uninterrupted one-core run, which a two-thread run of it does not."""
    one_core = {min(os.sched_getaffinity(0))}
    words = [*NODE_WORDS, f"out_dir={tmp_path / 'interrupted'}"]
    # The uninterrupted run in this process, whose torch has one thread (conftest): a first start here is given one
    # CPU, as under `taskset` (its record says so, below)
    reference = in_process("train.py", [*NODE_WORDS, f"out_dir={tmp_path / 'reference'}"])
    assert reference.returncode == 0, reference.stderr
    reference_run, expected = checkpoint_digests(tmp_path / "reference")
    assert read_json(reference_run / "status.json")["environment"]["threads"] == 1
    assert kill_at_call(words, "data.stream.TrainingStream", "batch", 5, False, cpus=one_core) == -signal.SIGKILL
    run_dir = tmp_path / "interrupted" / "default" / "runs" / reference_run.name
    assert read_json(run_dir / "lineage.json")["environment"]["threads"] == 1
    with fork_server() as run:  # processes that see two CPUs (this one's torch was set to one thread)
        resumed = run("train.py", words)
        assert resumed.returncode == 0, resumed.stderr
        assert "keeps the 1 CPU thread(s) it was started with (this process was given 2)" in resumed.stderr
        assert checkpoint_digests(tmp_path / "interrupted")[1] == expected
        status = read_json(run_dir / "status.json")
        assert status["environment"]["threads"] == 1 and "environment_changes" not in status
        fresh = run("train.py", [*NODE_WORDS, f"out_dir={tmp_path / 'two'}"])  # a first start there: two threads
    assert fresh.returncode == 0, fresh.stderr
    two_run, two_threads = checkpoint_digests(tmp_path / "two")
    assert read_json(two_run / "status.json")["environment"]["threads"] == 2
    assert two_threads != expected  # what the test guards against: the thread count changes the bytes


def test_sigterm_saves_then_stops_and_resumes_bitwise(tmp_path, in_process):
    """SIGTERM mid-run (the process sends it to itself in its 21st batch: a counted event, as kill_at_call's kills)
    saves the state at the iteration it stops at; a restart ends bitwise equal."""
    reference_dir, stopped_dir = tmp_path / "reference", tmp_path / "stopped"
    sparse = [*WORDS, "resume_every_seconds=3600"]  # states at checkpoints only: the signal must cause one
    assert in_process("train.py", tiny_words(reference_dir, *sparse)).returncode == 0
    reference_run, reference = checkpoint_digests(reference_dir)
    run_dir = stopped_dir / "default" / "runs" / reference_run.name
    code = kill_at_call(tiny_words(stopped_dir, *sparse), "data.stream.TrainingStream", "batch", 21, False,
                        signal_number=signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    status = read_json(run_dir / "status.json")
    assert status["state"] == "interrupted" and 0 < status["iteration"] < status["total_iterations"]
    assert status["iteration"] not in read_json(run_dir / "manifest.json")["schedule"]  # a state only the signal saves
    saved = sorted((run_dir / "resume").glob("state_*.pt"))[-1]
    assert saved.name == f"state_{status['iteration']:08d}.pt"
    assert in_process("train.py", tiny_words(stopped_dir, *sparse)).returncode == 0
    assert checkpoint_digests(stopped_dir)[1] == reference


class Stop(Exception):
    """Ends a run in this process right after a given resume state is saved (a kill, minus the process)."""


def train_until_state(settings, execution, run_dir, monkeypatch, iteration: int) -> None:
    """Train in this process and stop right after the resume state of `iteration` is written."""
    save = RunFolder.save_resume_state

    def save_then_stop(folder, state):
        save(folder, state)
        if state["iteration"] == iteration:
            raise Stop

    with monkeypatch.context() as patch:
        patch.setattr(RunFolder, "save_resume_state", save_then_stop)
        with pytest.raises(Stop):
            loop.run(settings, run_dir, execution)


def test_a_resume_state_that_loads_but_fails_its_sha256_is_skipped(tmp_path, tiny_settings, monkeypatch, one_thread):
    """The newest resume state replaced by another run's valid one (loads, same shapes and iteration, but
    not the bytes its .sha256 names) is skipped: the older good state is used and the run ends bitwise equal."""
    settings, execution = tiny_settings("resume_every_seconds=0")
    stranger, _ = tiny_settings("resume_every_seconds=0", "seed=1")
    assert loop.run(settings, tmp_path / "reference", execution) == "done"
    train_until_state(settings, execution, tmp_path / "interrupted", monkeypatch, iteration=12)
    train_until_state(stranger, execution, tmp_path / "stranger", monkeypatch, iteration=12)
    folder = RunFolder(tmp_path / "interrupted")
    newest, foreign = (RunFolder(tmp_path / name).resume / "state_00000012.pt" for name in ("interrupted", "stranger"))
    assert sha256_file(foreign) != sha256_file(newest)
    shutil.copyfile(foreign, newest)
    assert folder.load_resume_state()["iteration"] == 11
    assert loop.run(settings, folder.path, execution) == "done"
    reference = RunFolder(tmp_path / "reference")
    assert digests(folder) == digests(reference)  # every checkpoint, byte for byte
    assert folder.log_path.read_text() == reference.log_path.read_text()


def digests(folder: RunFolder) -> dict[str, str]:
    """{checkpoint file: sha256 of its bytes on disk} of every checkpoint the manifest lists."""
    return {name: sha256_file(folder.checkpoints / name) for name in read_json(folder.manifest_path)["files"]}
