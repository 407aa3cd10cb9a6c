# Two commands for a newcomer: `make demo` and `make test`. Each sets up .venv itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-load setup screenshots bench mutate clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,mount]'   # mount: fctui mount's FUSE bindings, so its test runs where libfuse is
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/fctui demo

test: $(STAMP)
	$(BIN)/python -m pytest

# The same suite on a busy machine: two CPU hogs run beside it (stopped however pytest ends); its exit
# code is pytest's. Run it before resolving an issue: a test that waits on time instead of a condition
# shows up here.
test-load: $(STAMP)
	@yes >/dev/null & h1=$$!; yes >/dev/null & h2=$$!; \
	trap 'kill $$h1 $$h2 2>/dev/null' EXIT INT TERM; \
	echo "two CPU hogs running (pids $$h1 $$h2)"; \
	$(BIN)/python -m pytest; rc=$$?; \
	exit $$rc

screenshots: $(STAMP)
	$(BIN)/python screenshots/make_screenshots.py

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[test,mount,bench]'   # bench: boto3, for benchmarks/s3_clients.py's comparison
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Mutation testing of the core (README, Mutation testing); scope and tests in pyproject's [tool.mutmut].
# A plain `make mutate` runs the named core's mutants that have no result yet (tools/mutate.py), so a
# stopped run goes on where it was; MUTANTS='fctui.rules.*' runs every mutant a pattern matches again.
# Niced, two children (MUTATE_CHILDREN=10 for speed: repo/ tests mostly wait on the store): the machine
# stays usable. mutmut stops a mutant after 6x its tests' wall time, which ten children on two cores can
# reach: run the timeouts again with two or three children before counting them killed.
# One S3 store serves every mutant's pytest (tests.servers), rather than one per mutant.
MUTANTS ?=
mutate: $(STAMP)
	$(BIN)/pip install -q -e '.[test,mount,mutate]'
	mkdir -p mutants/tmp
	PYTEST_DEBUG_TEMPROOT=$(CURDIR)/mutants/tmp $(BIN)/python -m tests.servers s3 -- \
		nice -n 10 $(BIN)/python tools/mutate.py $(MUTANTS)
	$(BIN)/python tools/mutation_score.py

clean:
	rm -rf $(VENV) build *.egg-info
