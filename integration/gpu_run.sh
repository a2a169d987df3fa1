#!/usr/bin/env bash
# On the GPU machine (repo root): unpack the FA3 builds packed by integration/prepare_gpu.py, then run
# what is asked: `exactness`, `bench ARGS...`, `sanitizer`, `host`, `upstream`. Results go to $OUT.
# vLLM's library: $ATTN_SCHED_FA3_LIB if set (e.g. the one in a vLLM engine site), else the packed one.
# sgl_kernel: importable when $SGLANG_SITE names a site holding it (an SGLang engine site), else skipped
# unless required (ATTN_SCHED_GPU_REQUIRED=1 makes a missing build a failure).
set -euo pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
FA3=/tmp/fa3; mkdir -p "$FA3"
for f in $([ -d .gpu ] && cd .gpu && find . -name '*.xz'); do
  mkdir -p "$FA3/$(dirname "$f")"; [ -f "$FA3/${f%.xz}" ] || xz -dc ".gpu/$f" > "$FA3/${f%.xz}"
done
export ATTN_SCHED_FA3_LIB=${ATTN_SCHED_FA3_LIB:-$FA3/vllm_fa3/_vllm_fa3_C.abi3.so}
export PYTHONPATH=$PWD:$FA3/fa3_fwd${SGLANG_SITE:+:$SGLANG_SITE}${PYTHONPATH:+:$PYTHONPATH}
export ATTN_SCHED_GPU_REQUIRED=${ATTN_SCHED_GPU_REQUIRED:-1} PYTHONUNBUFFERED=1
what=${1:-exactness}; shift || true
case "$what" in
  exactness) ATTN_SCHED_GPU_RESULTS=$OUT/gpu-exactness.json python3 -m pytest tests/gpu -q -p no:cacheprovider "$@" 2>&1 | tee "$OUT/gpu-exactness.log" ;;
  bench) python3 -m attn_sched_plugin.cli bench --out "$OUT" "$@" 2>&1 | tee -a "$OUT/bench.log" ;;
  sanitizer) compute-sanitizer --tool memcheck --print-limit 20 python3 -m tests.gpu.sanitizer_subset 2>&1 | tee "$OUT/sanitizer.log" ;;
  host) python3 benchmarks/host_overhead.py --out "$OUT/host-overhead.json" "$@" 2>&1 | tee "$OUT/host-overhead.log" ;;
  upstream)
    # FA3's own kvcache tests (upstream files carried in .carry/upstream, see prepare_gpu.py --upstream)
    export FLASH_ATTENTION_DISABLE_PAGEDKV=TRUE FLASH_ATTENTION_DISABLE_LOCAL=TRUE FLASH_ATTENTION_DISABLE_FP16=TRUE \
           FLASH_ATTENTION_DISABLE_BACKWARD=TRUE ATTN_SCHED_UPSTREAM_RESULTS=$OUT/upstream-kvcache.json
    PYTHONPATH=$PYTHONPATH:$PWD/.carry/upstream python3 -m pytest .carry/upstream/test_flash_attn.py::test_flash_attn_kvcache \
      -p tests.gpu.upstream_kvcache -q -p no:cacheprovider "$@" 2>&1 | tail -n 40 | tee "$OUT/upstream-kvcache.log" ;;
  *) echo "gpu_run.sh: unknown step '$what'; accepted: exactness, bench, sanitizer, host, upstream" >&2; exit 2 ;;
esac
