"""Launching grids: inline, local worker processes, or Slurm job arrays through submitit.

`runs` reads each run's state from its folder (and squeue), `job` is the unit of work (a pack of
runs; `TrainJob` on Slurm), `launch` decides what to launch and launches it.
"""
