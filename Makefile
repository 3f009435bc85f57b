# make demo  — set up the environment (uv, locked), train the demo grid, measure it, draw its figures and report
# make test  — set up the environment and run the whole test suite
# make test-fast — everything but the slow lane (the end-to-end subprocess, Slurm and demo tests): the edit-test loop
# make gallery — the demo, then the README's gallery images (docs/gallery/) from its figures
# make bench — the benchmarks: data loop (ours vs a DataLoader + PIL loop), deciding a finished 1000-run grid, analysis metrics, the metrics table of a 1000-run grid, k runs at once vs one after another, threads idle and under load, the read-out's cost (a transfer grid's analysis vs its training, the demo's figures)

UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PYTHON := .venv/bin/python

.PHONY: setup demo test test-fast bench gallery

setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --compile-bytecode

demo: setup
	$(PYTHON) train.py experiment=demo
	$(PYTHON) analysis.py experiment=demo

gallery: demo
	$(PYTHON) -m figures.gallery outputs/demo docs/gallery

test: setup
	$(PYTHON) -m pytest -n 2 --dist loadgroup

test-fast: setup
	$(PYTHON) -m pytest -m "not slow"

bench: setup
	$(PYTHON) benchmarks/data_loop.py
	$(PYTHON) benchmarks/decide_grid.py
	$(PYTHON) benchmarks/analysis_metrics.py
	$(PYTHON) benchmarks/store.py
	$(PYTHON) benchmarks/parallel_runs.py
	$(PYTHON) benchmarks/threads_under_load.py
	$(PYTHON) benchmarks/readout_cost.py
