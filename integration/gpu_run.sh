#!/usr/bin/env bash
# On the GPU machine (repo root): unpack the FA3 builds packed by integration/prepare_gpu.py,
# then run what is asked: `exactness`, `bench ARGS...`, `sanitizer`. Results go to $OUT (or ./gpu-out).
set -euo pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
FA3=/tmp/fa3; mkdir -p "$FA3"
for f in $(cd .gpu && find . -name '*.xz'); do
  mkdir -p "$FA3/$(dirname "$f")"; [ -f "$FA3/${f%.xz}" ] || xz -dc ".gpu/$f" > "$FA3/${f%.xz}"
done
export ATTN_SCHED_FA3_LIB=$FA3/vllm_fa3/_vllm_fa3_C.abi3.so
export PYTHONPATH=$PWD:$FA3/fa3_fwd${PYTHONPATH:+:$PYTHONPATH}
export ATTN_SCHED_GPU_REQUIRED=1 PYTHONUNBUFFERED=1
what=${1:-exactness}; shift || true
case "$what" in
  exactness) ATTN_SCHED_GPU_RESULTS=$OUT/gpu-exactness.json python3 -m pytest tests/gpu -q -p no:cacheprovider "$@" 2>&1 | tee "$OUT/gpu-exactness.log" ;;
  bench) python3 -m attn_sched_plugin.cli bench --out "$OUT" "$@" 2>&1 | tee -a "$OUT/bench.log" ;;
  sanitizer) compute-sanitizer --tool memcheck --print-limit 20 python3 -m tests.gpu.sanitizer_subset 2>&1 | tee "$OUT/sanitizer.log" ;;
  *) echo "gpu_run.sh: unknown step '$what'; accepted: exactness, bench, sanitizer" >&2; exit 2 ;;
esac
