"""A preset of one's own: `python train.py experiment=studies/example_study.py`, then
`python analysis.py experiment=studies/example_study.py` (docs/experiments.md#choosing-an-experiment).

The file defines EXPERIMENT, an entry of the same shape as conf/experiments.py's, named as the file's stem:
its runs go to <out_dir>/example_study/. A list value sweeps that key; key=value on the command line still
replaces a value in every grid. Copy the file, rename it, name its EXPERIMENT as the new file and edit the
settings. This one trains in seconds on a CPU (tests/test_own_experiments.py trains it).
"""

from conf.experiments import Experiment

EXPERIMENT = Experiment(
    "example_study",
    "CONV-L-8 of depth 1 and 2 on 256 embedded synthetic images, 3 epochs: a preset of one's own, in seconds on a CPU",
    {"dataset": "synthetic", "synthetic_train_size": 256, "synthetic_test_size": 64, "image_size": 16,
     "batch_size": 32, "epochs": 3, "arch": "convnet", "depth": [1, 2], "width": 8, "lr": 0.05},
    notes="the sizes are chosen for speed, not for any paper",
)
