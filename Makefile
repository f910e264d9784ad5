# Set-up is part of every target: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MTBENCH_DATA ?= ../shared/datasets
export MTBENCH_DATA
SUITE ?= fewshot
BUDGET ?= quick

.PHONY: install system run test test-slow test-gpu leaderboards leaderboard-runs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml plugins/mtbench-zoo/pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip setuptools
	# torch is pinned first so that no multi-GB CUDA build is pulled on a CPU machine
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]' -e plugins/mtbench-zoo
	touch $@

install: $(VENV)/.installed

# Debian packages the default tests drive: chromium (the HTML report in a real browser) and pdflatex with
# booktabs (the LaTeX table compiles). Checked on every run (cheap), installed only when missing, quietly and
# non-interactively; as root directly (CI), else through sudo.
system:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	{ command -v pdflatex >/dev/null 2>&1 && kpsewhich booktabs.sty >/dev/null 2>&1; } || \
		missing="$$missing texlive-latex-base texlive-latex-recommended"; \
	if [ -n "$$missing" ]; then \
		sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "apt-get install$$missing"; \
		$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq \
			--no-install-recommends$$missing >/dev/null; \
	fi

run: install
	$(BIN)/mtbench run --suite $(SUITE) --budget $(BUDGET)

test: install system
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

test-gpu: install
	$(BIN)/python -m pytest -q -m gpu

bench: install
	$(BIN)/python benchmarks/maml_step.py

# Re-render the committed leaderboards (Markdown, CSV, HTML report with plots) from the committed results:
# rendering only, nothing trains. `make leaderboard-runs` trains the cells those results came from.
leaderboards: install
	for s in fewshot regression crossdomain; do \
		$(BIN)/mtbench leaderboard --results-dir leaderboards/$$s/results --suite $$s --format markdown \
			--output leaderboards/$$s/README.md && \
		$(BIN)/mtbench leaderboard --results-dir leaderboards/$$s/results --suite $$s --format csv \
			--output leaderboards/$$s/leaderboard.csv && \
		$(BIN)/mtbench leaderboard --results-dir leaderboards/$$s/results --suite $$s --format html \
			--output leaderboards/$$s/report.html || exit 1; \
	done
	# the paired comparisons the crossdomain question rests on (README: "Does fine-tuning beat meta-learning ...")
	{ for pair in "finetune protonet" "finetune meta-baseline" "baseline-pp finetune" "dann dann-no-adversary" \
		"finetune matchingnet" "finetune relationnet" "finetune memory" "finetune meta-lstm" "finetune anil" \
		"maml finetune" "maml-bn-support finetune" "reptile finetune" "meta-sgd finetune" "maml maml-bn-support" \
		"finetune-all finetune" "maml-bn-support finetune-all" "reptile finetune-all" \
		"finetune-all meta-lstm" "reptile baseline-pp"; do \
		$(BIN)/mtbench compare -r leaderboards/crossdomain/results --suite crossdomain $$pair || exit 1; echo; \
	done; } > leaderboards/crossdomain/comparisons.txt
	# the runs re-run after a change of their code, paired with the committed runs they superseded (kept in
	# leaderboards/fewshot/superseded; before-runs made from uncommitted trees were removed, so those are not paired)
	$(BIN)/mtbench compare leaderboards/fewshot/superseded leaderboards/fewshot/results --suite fewshot \
		> leaderboards/fewshot/rerun-comparison.txt

# The runs behind leaderboards/ (hours on 2 CPU cores; resumes, so only missing cells train).
leaderboard-runs: install
	$(BIN)/mtbench run --suite fewshot --budget quick --results-dir leaderboards/fewshot/results
	$(BIN)/mtbench run --suite fewshot --budget quick --results-dir leaderboards/fewshot/results \
		-a matchingnet -a relationnet -a memory
	# meta-lstm as run at 6a436b1 (quick was 2,000 episodes, no keep_best, 5 training queries), then its row with
	# the meta-batch and training queries selected on validation at 5-way 1-shot, where seeds 1 and 2 are added
	# (README; the other candidates are in leaderboards/fewshot/selection)
	$(BIN)/mtbench run --suite fewshot --budget quick --results-dir leaderboards/fewshot/results -a meta-lstm \
		--set meta-lstm.input_gate_bias=-2.0 --set meta-lstm.meta_iterations=2000 --set meta-lstm.keep_best=false \
		--set meta-lstm.train_query=5
	$(BIN)/mtbench run --suite fewshot --budget quick --results-dir leaderboards/fewshot/results \
		-a meta-lstm --set meta-lstm.input_gate_bias=-2.0 --set meta-lstm.meta_batch=4 \
		--set meta-lstm.meta_iterations=750 --set meta-lstm.validate_every=62
	$(BIN)/mtbench run --suite fewshot --budget quick --protocol 5w1s --results-dir leaderboards/fewshot/results \
		-a meta-lstm --set meta-lstm.input_gate_bias=-2.0 --set meta-lstm.meta_batch=4 \
		--set meta-lstm.meta_iterations=750 --set meta-lstm.validate_every=62 --seed 1 --seed 2
	$(BIN)/mtbench run --suite fewshot --budget quick --protocol 5w1s --results-dir leaderboards/fewshot/results \
		-a baseline-pp -a mtl -a meta-baseline
	# dann's adversary weight as selected on validation (README; the other candidates' runs are in
	# leaderboards/fewshot/selection)
	$(BIN)/mtbench run --suite fewshot --budget quick --protocol 5w1s --results-dir leaderboards/fewshot/results \
		-a dann --set dann.adversary_weight=0.1
	$(BIN)/mtbench run --suite fewshot --budget standard --protocol 5w1s --results-dir leaderboards/fewshot/results \
		-a anil -a maml -a maml-fo -a maml-l2sp -a meta-sgd-maml -a reptile -a meta-sgd \
		--set maml-l2sp.pretrain_steps=1500
	$(BIN)/mtbench run --suite regression --budget quick --results-dir leaderboards/regression/results
	$(BIN)/mtbench run --suite crossdomain --budget quick --results-dir leaderboards/crossdomain/results

clean:
	rm -rf $(VENV) results build *.egg-info
