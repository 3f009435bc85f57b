"""Named experiments: `python train.py experiment=NAME [key=value ...]`.

An experiment is a preset of run settings; a list value sweeps that key, and several swept keys
form a Cartesian grid. Command-line values replace the preset's value for the same key. Runs of
an experiment live under `<out_dir>/<experiment>/runs/`.
"""

from dataclasses import dataclass, field

DEFAULT_EXPERIMENT = "default"


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    settings: dict = field(default_factory=dict)  # key -> value, or list of values to sweep


EXPERIMENTS = {
    experiment.name: experiment
    for experiment in (
        Experiment(DEFAULT_EXPERIMENT, "one run of the defaults (what a plain `python train.py` runs)"),
        Experiment(
            "demo",
            "synthetic data on a CPU in a few minutes: CONV-L-32 of two depths, clean and 20% noisy labels",
            {"dataset": "synthetic", "arch": "convnet", "depth": [2, 4], "width": 32,
             "label_noise": [0.0, 0.2], "epochs": 12, "lr": 0.02, "lr_schedule": "multistep",
             "lr_milestones": (8,), "batch_size": 128},
        ),
    )
}
