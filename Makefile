# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
SCALE  ?= 4
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml client/pyproject.toml | sha256sum | cut -c1-12)

.PHONY: install demo test lint bench clean screenshots

$(STAMP): pyproject.toml client/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Veilgate needs Python 3.11 or newer (set PYTHON=...)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e './client[all]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# The worker runs the approved jobs (it switches to a uid per job: root); the API process runs
# none and, started as root, keeps no capability at all (docs/operations.md). Ctrl-C stops both.
UNPRIVILEGED := $(shell [ "$$(id -u)" = 0 ] && command -v setpriv >/dev/null && echo setpriv --inh-caps=-all --bounding-set=-all --no-new-privs --)

demo: $(STAMP)
	$(BIN)/veilgate demo setup --dir .demo --scale $(SCALE) --port $(PORT)
	@echo "For the veilgate command in another shell:  export VEILGATE_CONFIG=$(CURDIR)/.demo/veilgate.toml"
	@$(BIN)/veilgate worker --config .demo/veilgate.toml & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker' EXIT INT TERM; \
	$(UNPRIVILEGED) $(BIN)/veilgate serve --config .demo/veilgate.toml --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check gateway sandbox tests benchmarks client examples
	$(BIN)/ruff format --check gateway sandbox tests benchmarks client examples
	$(BIN)/mypy --strict gateway
	$(BIN)/mypy --strict --config-file client/pyproject.toml client/veilgate_client
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python benchmarks/registration.py
	$(BIN)/python benchmarks/audit_log.py
	$(BIN)/python benchmarks/aggregate.py
	$(BIN)/python benchmarks/accuracy.py

# docs/console/*.png: the console's main pages in Debian's chromium (Chinese pages need a CJK font).
screenshots: $(STAMP)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m tests.console.screenshots docs/console

clean:
	rm -rf .demo .pytest_cache .mypy_cache .ruff_cache
