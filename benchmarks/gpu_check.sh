#!/usr/bin/env bash
# What sah does with the GPUs of this machine, each step timed and checked:
#   1. the adapter benchmark (benchmarks/bench_adapters.py --quick; its ratios are CPU timings)
#   2. a tiny `sah-train trainer=gpu` run, against the same run on the CPU (ratio)
#   3. `hydra/launcher=gpus`: one job per GPU at once, against one job alone (ratio, ideal 1)
#   4. DDP over every GPU (trainer=ddp), against one GPU (ratio)
# Prints a table of PASS/FAIL with seconds and ratios; exits 1 if a step failed. Without a GPU
# it says so and exits 0: nothing here can be checked on a CPU.
#   bash benchmarks/gpu_check.sh            (from the repository root, sah installed)
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python}

n_gpus=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
if [[ ${n_gpus:-0} -lt 1 ]]; then
  echo "gpu_check: no CUDA GPU visible to torch on this machine; nothing checked."
  exit 0
fi
"$PYTHON" -c 'import torch; [print(f"GPU {i}: {torch.cuda.get_device_name(i)}") for i in range(torch.cuda.device_count())]'

OUT=$(mktemp -d /tmp/sah-gpu-check.XXXXXX)
export SAH_CACHE_DIR=$OUT/cache PYTHONUNBUFFERED=1
TINY=(data.manifest.config.n_patients=6 trainer.max_epochs=1 data.slices_per_epoch=16
  data.batch_size=8 data.slice_size=64 'model.channels=[4,8]' 'model.strides=[2]'
  callbacks.progress=null adapter=lora_c)
ROWS=()
FAILED=0

# row <step> <PASS|FAIL|SKIP> <seconds> <detail>
row() {
  ROWS+=("$(printf '%-28s %-5s %7s  %s' "$1" "$2" "$3" "$4")")
  [[ $2 != FAIL ]] || FAILED=1
}

# timed <name> <command...>: runs it, its output in $OUT/<name>.log; sets RC and SECS.
timed() {
  local name=$1 start
  shift
  start=$(date +%s.%N)
  "$@" >"$OUT/$name.log" 2>&1
  RC=$?
  SECS=$(awk -v a="$(date +%s.%N)" -v b="$start" 'BEGIN { printf "%.1f", a - b }')
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# run_sah <name> <overrides...>: sah-train (tiny settings) in $OUT/<name>, its own MLflow store.
run_sah() {
  local name=$1
  shift
  mkdir -p "$OUT/$name"
  pushd "$OUT/$name" >/dev/null || return
  timed "$name" "$PYTHON" -m sah.cli.train "$@" "${TINY[@]}" \
    "tracking.uri=sqlite:///$OUT/$name/mlflow.db"
  popd >/dev/null || return
}

# finished <name> <runs expected>: $OUT/<name>'s MLflow store holds that many FINISHED runs.
finished() {
  "$PYTHON" - "$OUT/$1/mlflow.db" "$2" <<'PY'
import sys
from mlflow.tracking import MlflowClient

client = MlflowClient(f"sqlite:///{sys.argv[1]}")
runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
trained = [r for r in runs if r.data.tags.get("sah.kind") != "sweep"]
ok = len(trained) == int(sys.argv[2]) and all(r.info.status == "FINISHED" for r in trained)
sys.exit(0 if ok else 1)
PY
}

# 1. Adapter benchmark (CPU timings of every adapter against full fine-tuning).
timed bench "$PYTHON" benchmarks/bench_adapters.py --quick --no-peft --out "$OUT/adapters.json"
if [[ $RC -eq 0 ]]; then
  row "adapter benchmark (--quick)" PASS "$SECS" "ratios: $OUT/adapters.md"
else
  row "adapter benchmark (--quick)" FAIL "$SECS" "see $OUT/bench.log"
fi

# 2. A tiny run on a GPU against the same run on the CPU (the first run generates the cohort).
run_sah warmup trainer=cpu
run_sah cpu trainer=cpu
cpu_secs=$SECS
run_sah gpu trainer=gpu
gpu_secs=$SECS
if [[ $RC -eq 0 ]] && finished gpu 1; then
  row "trainer=gpu tiny run" PASS "$gpu_secs" \
    "wall time GPU/CPU $(ratio "$gpu_secs" "$cpu_secs") (CPU $cpu_secs s)"
else
  row "trainer=gpu tiny run" FAIL "$gpu_secs" "see $OUT/gpu.log"
fi

# 3. One job per GPU through hydra/launcher=gpus, all at once.
run_sah launcher -m hydra/launcher=gpus trainer=gpu "adapter.rank=$(seq -s, 1 "$n_gpus")"
used=$(grep -oE '\(GPUs [^)]*\)' "$OUT/launcher.log" | sort -u | wc -l)
if [[ $RC -eq 0 ]] && finished launcher "$n_gpus" && [[ $used -eq $n_gpus ]]; then
  row "hydra/launcher=gpus x$n_gpus" PASS "$SECS" \
    "$n_gpus jobs on $used GPU slot(s); wall vs one job $(ratio "$SECS" "$gpu_secs") (ideal 1)"
else
  row "hydra/launcher=gpus x$n_gpus" FAIL "$SECS" "jobs on $used GPU slot(s); see $OUT/launcher.log"
fi

# 4. DDP over every GPU (trainer=ddp picks the GPUs and SyncBatchNorm there).
if [[ $n_gpus -ge 2 ]]; then
  run_sah ddp trainer=ddp "trainer.devices=$n_gpus"
  if [[ $RC -eq 0 ]] && grep -q "MEMBER: $n_gpus/$n_gpus" "$OUT/ddp.log" && finished ddp 1; then
    row "DDP over $n_gpus GPUs" PASS "$SECS" \
      "wall vs one GPU $(ratio "$SECS" "$gpu_secs") (tiny runs are start-up bound)"
  else
    row "DDP over $n_gpus GPUs" FAIL "$SECS" "see $OUT/ddp.log"
  fi
else
  row "DDP over GPUs" SKIP - "one GPU here; DDP needs two"
fi

echo
printf '%-28s %-5s %7s  %s\n' step result s detail
printf '%s\n' "${ROWS[@]}"
echo "logs: $OUT"
exit $FAILED
