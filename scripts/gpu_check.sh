#!/usr/bin/env bash
# One-GPU check of ce_jax, under 8 minutes on one NVIDIA GPU (CUDA 12 driver; the steps' time
# limits add up to 7 min 55 s):
#   1. a venv with the tested stack (requirements/py311.txt), JAX's CUDA plugin of the same
#      version and torch with CUDA;
#   2. which convolution path GroupedConv picks on the GPU, timed against the other paths;
#   3. the test suite's fast subset (tests/theory, tests/design, tests/models: the library, not the binaries) on the GPU;
#   4. the convolution, training-step (torch eager, and torch.compile on two designs) and NTK
#      benchmarks, torch on the same GPU.
# Everything lands in OUT (default runs/gpu_check) as JSON and text; summary.json says which
# steps passed. Offline machines: PIP_FIND_LINKS=/path/to/wheels uses a local wheelhouse.
#
#   bash scripts/gpu_check.sh [OUT]
#
# GPU_CHECK_TESTS overrides the test selection (default tests/theory tests/design tests/models). GPU_CHECK_ON_CPU=1 runs
# the same steps on a CPU machine against an existing venv (GPU_VENV,
# torch on the CPU, no install): a check of the script itself, not of a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-runs/gpu_check}}
VENV=${GPU_VENV:-.venv-gpu}
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
mkdir -p "$OUT"
start=$(date +%s)
declare -A status
log() { echo "[gpu_check $(( $(date +%s) - start )) s] $*"; }
step() {  # step NAME TIMEOUT_S COMMAND...: runs it, logs to OUT/NAME.txt, records pass/fail
  local name=$1 limit=$2; shift 2
  log "$name (limit ${limit} s)"
  if timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; then status[$name]=pass
  else status[$name]="fail (exit $?, see $name.txt)"; fi
  log "$name: ${status[$name]}"; tail -n 12 "$OUT/$name.txt"
}

ON_CPU=${GPU_CHECK_ON_CPU:-0}
DEVICE=cuda
if [ "$ON_CPU" = 1 ]; then
  DEVICE=cpu; echo "no GPU: GPU_CHECK_ON_CPU=1, a CPU run of the script" > "$OUT/gpu.txt"
elif ! nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    > "$OUT/gpu.txt" 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi failed: $(head -c 200 "$OUT/gpu.txt"))"
  exit 2
fi
log "GPU: $(cat "$OUT/gpu.txt")"

JAX_VERSION=$(sed -n 's/^jax==//p' requirements/py311.txt)
PIP_FIND_LINKS=${PIP_FIND_LINKS:-}
install() {
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV" || return 1
  local pip=("$VENV/bin/pip" install -q ${PIP_FIND_LINKS:+--find-links "$PIP_FIND_LINKS"})
  "${pip[@]}" -r requirements/py311.txt &&
  "${pip[@]}" "jax[cuda12]==$JAX_VERSION" "torch==$TORCH_VERSION" pytest pytest-xdist &&
  "$VENV/bin/pip" install -q --no-deps -e . &&
  "$VENV/bin/python" -c "import jax, torch; assert jax.default_backend() == 'gpu', jax.devices(); \
assert torch.cuda.is_available(); print(jax.__version__, jax.devices(), torch.__version__)"
}
export VENV PY PIP_FIND_LINKS JAX_VERSION TORCH_VERSION
export -f install
if [ "$ON_CPU" = 1 ]; then status[install]="skipped (GPU_CHECK_ON_CPU)"
else step install 120 bash -c install; fi
if [ "${status[install]}" != pass ] && [ "$ON_CPU" != 1 ]; then
  echo '{"install": "fail"}' > "$OUT/summary.json"; exit 1
fi
BIN=$VENV/bin
export TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false

# Which path does GroupedConv take on the GPU, and is it the fastest there?
step conv_path 30 "$BIN/python" - "$OUT/conv_path.json" <<'PY'
import json, statistics, sys, time
import flax.linen as nn, jax, jax.numpy as jnp
from ce_jax.models import layers
rows = []
for g, w in ((1, 128), (3, 64), (37, 10), (10, 10)):
  c = g * w
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 32, 32, c))
  kw = dict(features=c, kernel_size=(3, 3), padding='SAME', feature_group_count=g, use_bias=False)
  row = {'design': f'{g}x{w}', 'auto_picks': layers.choose_impl(g, padding=((1, 1), (1, 1)))}
  for impl in ('auto', 'stock', 'loop'):
    conv = layers.GroupedConv(impl=impl, **kw) if impl != 'stock' else nn.Conv(**kw)
    p = conv.init(jax.random.PRNGKey(1), x)
    f = jax.jit(jax.grad(lambda p, x: jnp.sum(conv.apply(p, x) ** 2), argnums=(0, 1)))
    jax.block_until_ready(f(p, x))
    ts = []
    for _ in range(20):
      t0 = time.perf_counter(); jax.block_until_ready(f(p, x)); ts.append(time.perf_counter() - t0)
    row[f'{impl}_ms'] = 1e3 * statistics.median(ts)
  row['auto_is_fastest'] = row['auto_ms'] <= 1.05 * min(row['stock_ms'], row['loop_ms'])
  rows.append(row); print(row)
json.dump({'backend': jax.default_backend(), 'devices': [str(d) for d in jax.devices()],
           'designs': rows}, open(sys.argv[1], 'w'), indent=1)
PY
# Compiled as users' runs are (the suite's fast CPU compile level is a CPU-time saving).
step tests 120 env CE_JAX_TEST_FULL_OPT=1 "$BIN/python" -m pytest -q -p no:cacheprovider \
  -m 'not slow and not nt' \
  ${GPU_CHECK_TESTS:-tests/theory tests/design tests/models} --junitxml="$OUT/tests.xml"
step bench_conv 40 "$BIN/python" experiments/benchmark_conv.py --torch_device=$DEVICE --reps=10 \
  --json_out="$OUT/bench_conv.json"
step bench_train 60 "$BIN/python" experiments/benchmark_train.py --torch_device=$DEVICE --reps=10 \
  --notorch_compile --json_out="$OUT/bench_train.json"
step bench_train_compile 75 "$BIN/python" experiments/benchmark_train.py --torch_device=$DEVICE \
  --reps=10 --models=1x128d,37x10d --json_out="$OUT/bench_train_compile.json"
step bench_ntk 30 "$BIN/python" experiments/benchmark_ntk.py --json_out="$OUT/bench_ntk.json"

{
  echo "{\"seconds\": $(( $(date +%s) - start )), \"gpu\": \"$(tr -d '"' < "$OUT/gpu.txt")\""
  for k in install conv_path tests bench_conv bench_train bench_train_compile bench_ntk; do
    echo ", \"$k\": \"${status[$k]:-not run}\""
  done
  echo "}"
} > "$OUT/summary.json"
log "done: $(cat "$OUT/summary.json" | tr -d '\n')"
for k in "${!status[@]}"; do
  [ "${status[$k]}" = pass ] || [ "$k" = install -a "$ON_CPU" = 1 ] || exit 1
done
