# kgexp developer commands. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# An offline dataset mirror beside the checkout, when there is one; otherwise datasets are downloaded.
KGEXP_DATA_DIR ?= $(abspath $(wildcard ../shared/datasets))
export KGEXP_DATA_DIR

.PHONY: help install train test test-fast lint options docs clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(BIN)/kgexp: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

install: $(BIN)/kgexp ## Create .venv and install kgexp (editable) with the dev extra; idempotent

train: install ## Main job: ComplEx on CoDEx-S for a few minutes on CPU, then print the test metrics
	$(BIN)/kgexp experiment=quickstart

test: install ## Run the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: install ## The tests without the slow tier (no subprocesses of the real command): the edit-test loop
	$(BIN)/python -m pytest -q -m "not slow"

lint: install ## ruff check and format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

options: install ## Regenerate docs/options.md (every option's type, default and range) from the code
	$(BIN)/python -m kgexp.config.reference > docs/options.md

docs: install ## Build the documentation site (MkDocs, warnings as errors) into build/site
	@test -x $(BIN)/mkdocs || $(BIN)/python -m pip install --quiet -e ".[docs]"
	$(BIN)/mkdocs build --strict --site-dir build/site

clean: ## Remove the virtual environment, caches and run outputs (not the dataset cache)
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist src/*.egg-info outputs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find multirun -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
