"""python train.py [key=value ...] — the training stage: one run from its settings to its checkpoints.

loop.py trains a run to its end and resumes it exactly (training.loop.run); stages.py decides where a run starts
(scratch, a parent's checkpoint with modules reset, a growing-data stage); devices.py how it uses its device
(threads, kernels, optimizer state); curves.py its live TensorBoard curves. What it writes, and where: folders/.
It never imports the measuring, the read-out or the figures (tests/test_layout.py).
"""
