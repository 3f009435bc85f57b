"""How idle CPU threads wait (conf/cpu_waiting.py) is chosen before torch loads, kept when the user sets it,
recorded in each run's environment, and changes no bit: the same run trained on two threads under each policy
writes byte-identical checkpoints, and a resume under another policy is no environment change."""

import os
import subprocess
import sys

import pytest

from folders import environment_differences
from tests.conftest import REPOSITORY, only_run_dir, read_json, tiny_words
from tests.test_resume import checkpoint_digests

pytestmark = pytest.mark.slow  # end to end: real runs trained and measured (make test-fast leaves them out)

WORDS = ["arch=convnet", "depth=2", "width=16", "epochs=2", "threads=2"]  # two threads: waiting can matter
POLICIES = {"the lab's default": {}, "spin (ACTIVE)": {"OMP_WAIT_POLICY": "ACTIVE"},
            "sleep (PASSIVE)": {"OMP_WAIT_POLICY": "PASSIVE"}, "libgomp's default": {"GOMP_SPINCOUNT": "300000"}}


def train_under(out_dir, policy: dict) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return subprocess.run([sys.executable, str(REPOSITORY / "train.py"), *tiny_words(out_dir, *WORDS)], cwd=REPOSITORY,
                          env={**environment, **policy}, capture_output=True, text=True, timeout=300)


def test_every_waiting_policy_trains_the_same_bits_and_is_recorded(tmp_path):
    digests, recorded = {}, {}
    for name, policy in POLICIES.items():
        result = train_under(tmp_path / name.replace(" ", "_"), policy)
        assert result.returncode == 0, result.stderr
        digests[name] = checkpoint_digests(tmp_path / name.replace(" ", "_"))[1]
        lineage = read_json(only_run_dir(tmp_path / name.replace(" ", "_")) / "lineage.json")
        recorded[name] = lineage["environment"]["cpu_wait"]
    assert digests["spin (ACTIVE)"] == digests["the lab's default"] == digests["libgomp's default"] == digests[
        "sleep (PASSIVE)"]
    assert len(digests["the lab's default"]) >= 4
    assert recorded == {"the lab's default": "GOMP_SPINCOUNT=1000", "spin (ACTIVE)": "OMP_WAIT_POLICY=ACTIVE",
                        "sleep (PASSIVE)": "OMP_WAIT_POLICY=PASSIVE", "libgomp's default": "GOMP_SPINCOUNT=300000"}


def test_another_waiting_policy_is_no_environment_change():
    recorded = {"device": "cpu (AVX2)", "threads": 2, "cpu_wait": "GOMP_SPINCOUNT=1000"}
    assert environment_differences(recorded, {**recorded, "cpu_wait": "OMP_WAIT_POLICY=ACTIVE"}) == {}
    assert environment_differences(recorded, {**recorded, "threads": 1}) == {"threads": [2, 1]}


@pytest.mark.parametrize("preset, expected", [({}, "GOMP_SPINCOUNT=1000"), ({"OMP_WAIT_POLICY": "ACTIVE"},
                         "OMP_WAIT_POLICY=ACTIVE"), ({"GOMP_SPINCOUNT": "1000"}, "GOMP_SPINCOUNT=1000")])
def test_the_policy_is_set_before_torch_loads_unless_the_user_set_one(preset, expected):
    """A fresh interpreter importing analysis.py: the policy is in the environment before torch is imported."""
    environment = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    probe = ("import sys, conf.cpu_waiting as waiting; real = waiting.wait_briefly\n"
             "def checked():\n    assert 'torch' not in sys.modules; real()\n"
             "waiting.wait_briefly = checked\nimport analysis, torch, os\nprint(waiting.describe())")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPOSITORY, env={**environment, **preset},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == expected, result.stderr
