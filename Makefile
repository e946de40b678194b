# Two entry points: `make demo` and `make test`. Each bootstraps .venv on a fresh machine.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch first and pinned: on these machines torch==2.13.0 is a local CPU wheel; any other spec pulls
# several GB of CUDA packages. The package itself only declares a lower bound.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install -q "$(TORCH_SPEC)"
	$(VPY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/labelflip demo

test: $(STAMP)
	$(VENV)/bin/ruff check labelflip tests benchmarks
	$(VENV)/bin/ruff format --check labelflip tests benchmarks
	$(VPY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check labelflip tests benchmarks
	$(VENV)/bin/ruff format --check labelflip tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format labelflip tests benchmarks
	$(VENV)/bin/ruff check --fix labelflip tests benchmarks

bench: $(STAMP)
	$(VPY) benchmarks/bench_attack.py

clean:
	rm -rf $(VENV) .pytest_cache
