# fourdqbo: the targets the README uses.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint bench clean

$(BIN)/fourdqbo: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "fourdqbo needs Python 3.11 or newer (set PYTHON=python3.11)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/fourdqbo  ## create .venv and install fourdqbo with the test tools

demo: install  ## a whole sync against the built-in sandbox, nothing to configure
	$(BIN)/fourdqbo demo

test: install  ## lint and the whole test suite (unit, sandbox integration with real Redis)
	$(BIN)/ruff check fourdqbo tests bench
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check fourdqbo tests bench
	$(BIN)/ruff format --check fourdqbo tests bench

bench: install  ## performance benchmarks against the sandbox (prints figures)
	$(BIN)/python bench/sync_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

chaos: install  ## crash, fault, people-in-QBO and concurrency suite against the sandbox and real Redis (prints figures)
	$(BIN)/python -m bench.chaos
