"""The read-out: what the metrics table supports, with its noise (findings/noise.py: the one verdict rule)."""
