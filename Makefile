# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs formerkit, trains the default recipe
#   make test   creates .venv, installs formerkit with its dev extras, runs lint and tests
#   make docs   builds the documentation site into site/ (strict)
PYTHON ?= python3
VENV ?= .venv
# A pinned CPU build of torch is installed first so that the `torch>=2.4` requirement never
# pulls a multi-GB CUDA build; override with e.g. `make test TORCH_SPEC="torch==2.5.1"`.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
DATA_DIR := $(abspath ../shared/data)
export FORMERKIT_DATA_DIR ?= $(if $(wildcard $(DATA_DIR)),$(DATA_DIR),)

.PHONY: demo test install install-dev lint docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"

demo: install
	$(BIN)/formerkit train

lint: install-dev
	$(BIN)/ruff check src tests benchmarks docs

test: install-dev
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/python -m pytest

# The documentation site, built strictly (broken links, missing references: errors) into site/.
docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build dist site src/*.egg-info .pytest_cache
