# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
SCALE  ?= 1
STAMP  := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Veilgate needs Python 3.11 or newer (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/veilgate demo setup --dir .demo --scale $(SCALE) --port $(PORT)
	$(BIN)/veilgate serve --config .demo/veilgate.toml --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check gateway sandbox tests benchmarks
	$(BIN)/ruff format --check gateway sandbox tests benchmarks
	$(BIN)/mypy --strict gateway
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/registration.py
	$(BIN)/python benchmarks/audit_log.py
	$(BIN)/python benchmarks/aggregate.py

clean:
	rm -rf .demo .pytest_cache .mypy_cache .ruff_cache
