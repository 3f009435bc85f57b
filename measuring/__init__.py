"""python analysis.py [key=value ...] — the measuring stage: every checkpoint of a run to rows of per-layer metrics.

protocol.py is the per-checkpoint protocol (which runs and checkpoints lack which metric, measured once); inputs.py
reads what a run needs besides its checkpoints (its splits as it trained on them, its transfer task, its model);
store.py and layout.py keep the rows (one cell per checkpoint, the table one part per run); snapshots.py the
probe snapshots CKA compares; curves.py the rows as live curves. The subcommands: features.py (`analysis.py
features`), similarity.py (`analysis.py similarity`), imported.py (`analysis.py import`). The metrics themselves,
tensors in and values out, are metrics/. It never imports figures or the read-out (tests/test_layout.py).
"""
