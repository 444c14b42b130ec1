# eoagent: every target sets itself up; a machine needs only this repository and Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run serve demo test test-slow test-all bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch first and pinned, so that no later package pulls a newer (or CUDA-only) build
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e ".[dev]" torch==2.14.1 torchvision==0.29.1
	touch $(STAMP)

# the chat app in the browser at http://127.0.0.1:7860, on the embedded default brain
run: install
	$(BIN)/eoagent serve

serve: run

# a terminal tour of the tools on a generated flood-and-fire example
demo: install
	$(BIN)/eoagent demo

test: install
	$(BIN)/python -m pytest -m "not slow and not gpu" -q

test-slow: install
	$(BIN)/python -m pytest -m "slow and not gpu" -q

test-all: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/run_all.py

lint: install
	$(BIN)/ruff check agent tools tests bench finetune
	$(BIN)/mypy agent tools finetune

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
