# Two entry points: `make demo` and `make test`. Each bootstraps .venv on a fresh machine.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# torch first and pinned: on these machines torch==2.13.0 is a local CPU wheel; any other spec pulls
# several GB of CUDA packages. The package itself only declares a lower bound.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint format bench clean

# --no-compile: pip byte-compiles every module of torch and the dependencies (about 20 s of the install on these
# machines); `make demo` imports a fraction of them and compiles those on import. `make test` (many Python
# processes) compiles everything once, in parallel (a module that does not compile only imports slower). pip is
# upgraded only when too old for editable installs.
$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -c "import pip, sys; sys.exit(int(pip.__version__.split('.')[0]) < 22)" || $(VPY) -m pip install -q --upgrade pip
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install -q --no-compile "$(TORCH_SPEC)"
	$(VPY) -m pip install -q --no-compile -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(VPY) -m pip install -q --no-compile -e ".[test]"
	$(VPY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(TEST_STAMP)

# The demo runs as 2 local worker processes on a multi-core CPU (`--workers auto`); bytecode is written into .venv on
# first import (even where PYTHONDONTWRITEBYTECODE is set) so the workers do not each compile torch's modules again.
demo: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(VENV)/bin/labelflip demo

test: $(TEST_STAMP)
	$(VENV)/bin/ruff check labelflip tests benchmarks
	$(VENV)/bin/ruff format --check labelflip tests benchmarks
	$(VPY) -m pytest -q

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check labelflip tests benchmarks
	$(VENV)/bin/ruff format --check labelflip tests benchmarks

format: $(TEST_STAMP)
	$(VENV)/bin/ruff format labelflip tests benchmarks
	$(VENV)/bin/ruff check --fix labelflip tests benchmarks

bench: $(STAMP)
	$(VPY) benchmarks/bench_attack.py

clean:
	rm -rf $(VENV) .pytest_cache
