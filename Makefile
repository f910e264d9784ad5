# Set-up is part of every target: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MTBENCH_DATA ?= ../shared/datasets
export MTBENCH_DATA
SUITE ?= fewshot
BUDGET ?= quick

.PHONY: install run test test-slow leaderboards bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml plugins/mtbench-zoo/pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned first so that no multi-GB CUDA build is pulled on a CPU machine
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]' -e plugins/mtbench-zoo
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/mtbench run --suite $(SUITE) --budget $(BUDGET)

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

# Regenerate the committed leaderboards from real runs (results are kept, so this resumes).
leaderboards: install
	$(BIN)/mtbench run --suite fewshot --budget quick --results-dir leaderboards/fewshot/results
	$(BIN)/mtbench leaderboard --results-dir leaderboards/fewshot/results --format markdown --output leaderboards/fewshot/README.md

clean:
	rm -rf $(VENV) results build *.egg-info
