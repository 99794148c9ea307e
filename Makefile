# The two commands of the README: `make demo` and `make test`. Each sets up what it needs first.
# Setup runs once: the venv is rebuilt only when pyproject.toml changes; models are pulled once
# into $FTPIPE_HOME (default ~/.cache/ftpipe).

PYTHON ?= $(shell (pyenv prefix 3.12.1 2>/dev/null || echo /root/.pyenv/versions/3.12.1) | head -1)/bin/python3.12
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow gpu-check configs bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x "$(PYTHON)" || { echo "Python 3.12 not found at $(PYTHON); set PYTHON=/path/to/python3.12" >&2; exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ftpipe models pull smollm2-135m-instruct
	$(BIN)/ftpipe run pipelines/demo.yaml

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ftpipe models pull tiny-llama
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

# Everything that needs a CUDA GPU (tests marked gpu, a QLoRA run on CUDA, bench/gpu.py); "skipped" without one.
gpu-check: $(STAMP)
	$(BIN)/python bench/gpu_check.py

configs: $(STAMP)
	$(BIN)/python -m ftpipe.training.golden

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) runs .ftpipe
