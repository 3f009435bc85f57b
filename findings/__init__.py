"""The read-out: what the metrics table supports, with its noise, from the table alone (no drawing here).

    from findings.readout import readout
    result = readout(metrics)   # findings.csv's rows, phases.csv's per-condition phases, each run's condition label

noise.py holds the one verdict rule; phases.py the turns of one curve; conditions.py which runs a finding speaks
of; learning.py, depth.py, plasticity.py and transfer.py one paper's questions each; readout.py joins them.
figures/ draws what this package states.
"""
