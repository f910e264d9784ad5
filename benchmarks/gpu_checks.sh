#!/usr/bin/env bash
# The GPU checks of issue 10 H, in one script for a lent GPU machine (no network there):
#   1. `make test-gpu`'s tests (pytest -m gpu) with the machine's own python and torch;
#   2. benchmarks/maml_step.py --device cuda: strategies against the plain per-task loop (goal: 3x), in IEEE
#      float32 as mtbench runs; with TF32=1 also with torch's default TF32 convolutions; with OVERRIDE=1 also
#      under NVIDIA_TF32_OVERRIDE=0 (the libraries' own switch: does any kernel still use TF32?);
#   3. fewshot cells with --device cuda (protonet and maml with strategy auto, quick budget, 5-way 1-shot).
# usage: DATA=<dir with omniglot/> OUT=<folder for logs and results> [CHUNKS="1 4 8 32"] [TF32=1] [OVERRIDE=1]
#        benchmarks/gpu_checks.sh
# It installs mtbench and the zoo without dependencies into the machine's python (torch, numpy, pandas,
# scipy, typer, pluggy ... must be there); a setuptools wheel in .whl/ is used when present.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:?set OUT}
DATA=${DATA:?set DATA}
PY=${PY:-python3}
step() { echo; echo "=== $* ($(date +%T))"; }

step machine
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

step install
if ls .whl/setuptools-*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/setuptools-*.whl && export PYTHONPATH=/tmp/site
fi
$PY -m pip install -q --no-index --no-deps --no-build-isolation -e . -e plugins/mtbench-zoo || exit 1
MTBENCH="$PY -m mtbench.cli"
$PY -c "import mtbench.cli" || exit 1

step "make test-gpu (pytest -m gpu)"
timeout 240 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_slow.py 2>&1 | tee "$OUT/test_gpu.log"

step "benchmarks/maml_step.py --device cuda"
timeout 300 $PY benchmarks/maml_step.py --device cuda --threads 2 --repeats 5 --rounds 1 --chunks ${CHUNKS:-1 4 8 32} \
  --vmap 2>&1 | tee "$OUT/maml_step_cuda.log"
if [ "${TF32:-0}" = 1 ]; then
  step "the same with torch's default TF32 convolutions (what mtbench turns off)"
  timeout 200 $PY benchmarks/maml_step.py --device cuda --threads 2 --repeats 5 --rounds 1 --chunks 1 32 --vmap --tf32 2>&1 \
    | tee "$OUT/maml_step_cuda_tf32.log"
fi
if [ "${OVERRIDE:-0}" = 1 ]; then
  step "IEEE float32 with NVIDIA_TF32_OVERRIDE=0 (cuBLAS and cuDNN refuse TF32 whatever torch asks)"
  NVIDIA_TF32_OVERRIDE=0 timeout 200 $PY benchmarks/maml_step.py --device cuda --threads 2 --repeats 2 --rounds 1 \
    --chunks 32 --vmap 2>&1 | tee "$OUT/maml_step_cuda_override.log"
fi

step "fewshot cells on cuda"
export MTBENCH_DATA=$DATA MTBENCH_CACHE=/tmp/mtbench-cache OMP_NUM_THREADS=2
results=/tmp/gpu-results
for a in protonet maml; do
  start=$SECONDS
  timeout 240 $MTBENCH run --suite fewshot --budget quick -a $a --protocol 5w1s --device ${DEVICE:-cuda} -r $results --quiet
  echo "$a: exit $?, $((SECONDS - start)) s wall"
done
$MTBENCH leaderboard -r $results --suite fewshot --format markdown 2>&1 | tee "$OUT/cuda_cells.md"
cp $results/fewshot/*.json "$OUT/"
$PY - "$results" <<'PY' | tee "$OUT/cuda_strategy.txt"
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).rglob("maml__*.json")):
    run = json.loads(path.read_text())
    print(path.name, run["fit_info"].get("strategy_detail"), run["timings"].get("train_s"), "s")
PY
