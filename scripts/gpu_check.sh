#!/usr/bin/env bash
# One prepared run on a CUDA machine (issues 4 and 13): first bench/gpu.py (an 8B-shaped
# model with random bf16 weights: forward time of every mode's chunk shape against the HBM
# bound, each step under the CUDA sync debug mode, speculation efficiency, a measured cost
# profile into $OUT/profiles/), every step with the torch reference kernels under the sync
# debug mode (bench/sync_steps.py), then the kernel tests on CUDA with Triton forced, per-kernel
# error and time against the best torch baseline (fp16), `bench.modes` on CUDA, TP=1 through
# the shard-worker path over NCCL, and bench/gpu.py's table last. Installs nothing. Every
# step has a timeout inside GPU_CHECK_TOTAL_S (460 s: the whole check stays under 8 min).
#
#   bash scripts/gpu_check.sh          # on the GPU machine
#   bash scripts/gpu_check.sh --cpu    # dry run here: same steps, interpreter, tiny shapes
#
# Logs and the JSON rows go to $OUT (the device runner's folder) or /tmp/tandem_gpu_check.
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=cuda
[[ "${1:-}" == "--cpu" ]] && MODE=cpu
PY=${PYTHON:-python3}
[[ $MODE == cpu && -z "${PYTHON:-}" && -x .venv/bin/python ]] && PY=.venv/bin/python
LOGS=${OUT:-/tmp/tandem_gpu_check}
mkdir -p "$LOGS"
export TANDEM_KERNELS=triton TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export TRITON_DEFAULT_FP_FUSION=${TRITON_DEFAULT_FP_FUSION:-1}
if [[ $MODE == cuda ]]; then
    export TRITON_INTERPRET=0  # tests/conftest.py only sets it when unset
    TEST_ARGS=(tests/kernels)
    BENCH_ARGS=()
    MODES_DEVICE=cuda
else
    export TRITON_INTERPRET=1
    TEST_ARGS=(tests/kernels/test_attention.py::test_split_keys tests/kernels/test_store_accept.py)
    BENCH_ARGS=(--dry-run)
    MODES_DEVICE=cpu
fi
START=$SECONDS
DEFAULT_TOTAL=460 SCALE=1
# the interpreter on a shared CPU: twice the room (the 8-minute bound is the GPU's)
[[ $MODE == cpu ]] && DEFAULT_TOTAL=920 SCALE=2
TOTAL_S=${GPU_CHECK_TOTAL_S:-$DEFAULT_TOTAL}  # every step's timeout fits in what is left of this
stamp() { echo "== [$((SECONDS - START))s] $*"; }
left() { echo $(( TOTAL_S - (SECONDS - START) )); }
cap() { local want=$(( $1 * SCALE )) reserve=$(( $2 * SCALE )) l; l=$(( $(left) - reserve )); (( l < want )) && want=$l; (( want < 10 )) && want=10; echo "$want"; }

stamp "device"
if ! $PY - > "$LOGS/device.txt" 2>&1 <<'PY'
import torch, triton
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device (CPU)"
print(f"{name} | torch {torch.__version__} | triton {triton.__version__} | "
      f"CUDA {torch.version.cuda}")
PY
then
    cat "$LOGS/device.txt"; echo "gpu_check: $PY cannot import torch and triton" >&2
    exit 2
fi
cat "$LOGS/device.txt"
if [[ $MODE == cuda ]] && ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: torch sees no CUDA device; run with --cpu for the dry run" >&2
    exit 2
fi

stamp "bench.gpu: 8B-shaped forward per chunk shape vs the HBM bound, sync-free steps, profile"
GPU_ARGS=()
[[ $MODE == cpu ]] && GPU_ARGS=(--cpu)
timeout "$(cap 150 290)" $PY -m bench.gpu "${GPU_ARGS[@]}" --out "$LOGS" > "$LOGS/gpu.log" 2>&1
GPU_RC=$?
tail -n 40 "$LOGS/gpu.log"

stamp "host time per step at 64 requests, zero-cost model (this machine's CPU; target < 1 ms)"
STEPS=50
[[ $MODE == cpu ]] && STEPS=5
TANDEM_KERNELS=torch timeout "$(cap 40 250)" $PY -m bench.step_overhead --steps $STEPS \
    > "$LOGS/step_overhead.log" 2>&1
OVERHEAD_RC=$?
tail -n 7 "$LOGS/step_overhead.log"

stamp "sync-free step with the torch reference kernels (small random model; CPU: unchecked)"
SYNC_ARGS=()
[[ $MODE == cpu ]] && SYNC_ARGS=(--cpu)
TANDEM_KERNELS=torch timeout "$(cap 40 210)" $PY -m bench.sync_steps "${SYNC_ARGS[@]}" \
    > "$LOGS/sync_steps.log" 2>&1
SYNC_RC=$?
tail -n 8 "$LOGS/sync_steps.log"

stamp "kernel tests (TANDEM_KERNELS=triton, TRITON_INTERPRET=$TRITON_INTERPRET)"
TESTS_TIMEOUT=$(cap 150 150)
timeout "$TESTS_TIMEOUT" $PY -m pytest -rfE -p no:cacheprovider "${TEST_ARGS[@]}" > "$LOGS/tests.log" 2>&1
TESTS_RC=$?
tail -n 30 "$LOGS/tests.log"
TESTS_LINE=$(grep -E "passed|failed|error" "$LOGS/tests.log" | tail -n 1)
[[ $TESTS_RC == 124 ]] && TESTS_LINE="TIMED OUT after $TESTS_TIMEOUT s; $TESTS_LINE"

stamp "kernel timings (fp16, best torch baseline)"
BENCH_TIMEOUT=$(cap 120 60)
timeout "$BENCH_TIMEOUT" $PY -m bench.kernels "${BENCH_ARGS[@]}" --budget-s $(( BENCH_TIMEOUT > 70 ? BENCH_TIMEOUT - 40 : 30 )) \
    --json "$LOGS/kernels.json" --table "$LOGS/kernels_table.txt" > "$LOGS/kernels.log" 2>&1
BENCH_RC=$?
grep -E "err=|FAILED|Error" "$LOGS/kernels.log" | head -n 40
[[ -s "$LOGS/kernels_table.txt" ]] && cat "$LOGS/kernels_table.txt"

stamp "bench.modes"
if $PY -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('bench.modes') is None)"
then
    if [[ $MODE == cuda ]]; then
        # Fewer, shorter prompts than its defaults. On CUDA each configuration also runs once
        # untimed before its timed run (its Triton compiles: bench/modes.py), hence 100 s.
        read -r -a MODES_ARGS <<< "${BENCH_MODES_ARGS:---prompts 4 --max-tokens 64}"
        timeout "$(cap 100 25)" $PY -m bench.modes --device "$MODES_DEVICE" "${MODES_ARGS[@]}" \
            > "$LOGS/modes.log" 2>&1
        MODES_RC=$?
        tail -n 25 "$LOGS/modes.log"
    else  # the dry run only checks that the command parses
        $PY -m bench.modes --help > "$LOGS/modes.log" 2>&1
        MODES_RC=$?
        echo "bench.modes --help: rc=$MODES_RC"
    fi
else
    echo "bench/modes.py is not in this checkout: skipped" | tee "$LOGS/modes.log"
    MODES_RC=skipped
fi

stamp "TP=1 through the shard-worker path (NCCL on CUDA, gloo on CPU; no Ray there)"
TP_KERNELS=triton
[[ $MODE == cpu ]] && TP_KERNELS=torch  # a whole model under the interpreter is too slow
TANDEM_KERNELS=$TP_KERNELS timeout "$(cap 60 5)" $PY -m actors.gpu_smoke --tp 1 \
    --device "$MODES_DEVICE" > "$LOGS/tp.log" 2>&1
TP_RC=$?
tail -n 8 "$LOGS/tp.log"

stamp "summary"
echo "device:        $(cat "$LOGS/device.txt")"
echo "bench.gpu:     rc=$GPU_RC  (log: $LOGS/gpu.log; profile: $LOGS/profiles/)"
echo "step overhead: rc=$OVERHEAD_RC  (log: $LOGS/step_overhead.log)"
echo "torch sync:    rc=$SYNC_RC  (log: $LOGS/sync_steps.log; every shape ok = no host sync)"
echo "kernel tests:  rc=$TESTS_RC  $TESTS_LINE"
echo "kernel bench:  rc=$BENCH_RC  (table above; err <= 1e-3 fp16; attention speedup >= 0.9)"
echo "bench.modes:   rc=$MODES_RC  (log: $LOGS/modes.log)"
echo "tp=1 shards:   rc=$TP_RC  (log: $LOGS/tp.log)"
if [[ -s "$LOGS/gpu_table.txt" ]]; then
    cat "$LOGS/gpu_table.txt"
else
    echo "(no bench.gpu table: see $LOGS/gpu.log)"; tail -n 15 "$LOGS/gpu.log"
fi
[[ $GPU_RC == 0 && $SYNC_RC == 0 && $TESTS_RC == 0 && $BENCH_RC == 0 &&
   ($MODES_RC == 0 || $MODES_RC == skipped) ]]
