# aisle: two commands on a fresh machine.
#   make demo   set everything up and run the main job end to end
#   make test   set everything up and run dbt's tests and pytest
# Everything installs from this repository's own files into .venv.

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
AISLE       := $(BIN)/aisle
DEMO_SCALE  ?= 1.0
BENCH_SCALE ?= 1.0
PYTEST_ARGS ?=

.PHONY: setup db demo test test-server bench lint clean stop

# Reinstall only when the package definition changes.
$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

profiles.yml:
	@test -f profiles.yml || cp profiles.yml.example profiles.yml

setup: $(BIN)/.installed profiles.yml

db: setup
	@$(AISLE) db start

demo: db
	@DEMO_SCALE=$(DEMO_SCALE) $(AISLE) demo

test: db
	@$(BIN)/python -m pytest $(PYTEST_ARGS)

# The integration tests again, against an external Postgres (target `server`).
test-server: setup
	@AISLE_TARGET=server $(BIN)/python -m pytest -m server $(PYTEST_ARGS)

bench: db
	@$(AISLE) bench --scale $(BENCH_SCALE)

lint: setup
	@$(BIN)/ruff check python

stop:
	@test -x $(AISLE) && $(AISLE) db stop || true

clean: stop
	rm -rf .aisle target logs data/synthetic reports/*.png
