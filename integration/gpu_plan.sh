#!/usr/bin/env bash
# The project's GPU sessions on the lent machine, as run (one warm machine, calls of <= 10 minutes, ~30 min
# of device time in all). Each engine phase installs its parts, then starts background jobs (setsid: they
# outlive the call) from a copy of the checkout in /tmp/plan/repo; `wait` follows the jobs and packs what
# exists into $OUT/plan.tgz (+ $OUT/status.txt), the at most 8 files a call brings back.
#   bash integration/gpu_plan.sh vllm [JOB:GPU...]    # parts parked in /tmp/parts/vllm-0.26.0 (2 since the part
#                                                     # keeps the MoE ops), else carried in .engines/vllm-0.26.0;
#                                                     # fa3-fwd in .gpu/fa3_fwd, FA3's upstream tests in
#                                                     # .carry/upstream; default jobs vllm:0 vllm_eager:1;
#                                                     # jobs named for one GPU run one after another
#   bash integration/gpu_plan.sh park NAME            # what is carried of .engines/NAME (one part, SHA256SUMS,
#                                                     # manifest.json) -> /tmp/parts/NAME (SGLang: 4 calls, vLLM 2)
#   bash integration/gpu_plan.sh sglang [JOB:GPU...]  # after the last part is parked; default job sglang:any
#   bash integration/gpu_plan.sh wait SECONDS         # follow the jobs for SECONDS, then pack
#   bash integration/gpu_plan.sh estimate JOB         # here or there: the runner's --dry-run time estimate of an
#                                                     # A/B job (vllm_small, sglang_small, vllm_gemma, sglang_eagle,
#                                                     # vllm_gptoss, vllm_small_det, sglang_gemma, sglang_dense,
#                                                     # vllm_small_nocompile)
# Sessions: 1st (nvidia-h200-x2) `vllm`, `sglang`; 2nd (nvidia-h200) `vllm bench_extend:0`, `park sglang-0.5.16`
# twice, `park sglang-0.5.16 && sglang sglang_graphs:0`. What each job runs is below (the commands recorded
# with the results).
set -uo pipefail
PLAN=/tmp/plan
REPO=$PLAN/repo
VLLM=vllm-0.26.0
SGLANG=sglang-0.5.16
RUN="python3 -m integration.serve_ab run"
VLLM_FA3=ATTN_SCHED_FA3_LIB=/tmp/engines/$VLLM/site/vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so
# shortened seed-PR workloads (10-minute calls): a decode phase and a prefill phase per fresh server
SHORT="--workloads decode-c4,prefill-c8 --override decode-c4:output=128,prompts=8 --override prefill-c8:output=16,prompts=8"
mkdir -p "$PLAN"

step() {  # step NAME COMMAND...: run, log, record the exit status, never stop the job
  local name=$1; shift
  echo "== $(date +%T) $name: $*" >> "$PLAN/steps.log"
  (cd "$REPO" && "$@") > "$PLAN/$name.log" 2>&1
  local rc=$?  # read before the line below: its $(date) would reset $? to 0
  echo "== $(date +%T) $name: exit $rc" >> "$PLAN/steps.log"
}

# on nvidia-h200-x2 the jobs run side by side, one GPU each (CUDA_VISIBLE_DEVICES); the A/B of a job
# never shares its GPU
vllm_job() {  # GPU 0: FA3 suites and the Gemma-3-like CUDA-graph runs
  [ -f $PLAN/vllm/gpu-exactness.json ] ||
    step vllm-exactness env $VLLM_FA3 OUT=$PLAN/vllm ATTN_SCHED_GPU_CASES=20000 bash integration/gpu_run.sh exactness -k "not sgl_kernel"
  step vllm-host env $VLLM_FA3 OUT=$PLAN/vllm bash integration/gpu_run.sh host --repeats 100 --loop 100
  step upstream env OUT=$PLAN/vllm ATTN_SCHED_UPSTREAM_EVERY=25 bash integration/gpu_run.sh upstream
  step vllm-gemma-graphs $RUN --engine vllm --env /tmp/engines/$VLLM/env.sh --models gemma-3-like --variants off,on \
    --repeats 1 --workloads decode-c4 --override decode-c4:output=256,prompts=8 \
    --extra-server-args "--max-cudagraph-capture-size 16" --out $PLAN/vllm-gemma-graphs
}

vllm_eager_job() {  # GPU 1: vLLM --enforce-eager, 3 fresh servers per variant
  step vllm-eager $RUN --engine vllm --env /tmp/engines/$VLLM/env.sh --models qwen3-32b-tp4-rank --variants off,on \
    --repeats 3 $SHORT --extra-server-args=--enforce-eager --port 8001 --out $PLAN/vllm-eager
}

sglang_job() {  # the first GPU the vLLM jobs free
  until [ -f $PLAN/vllm.done ] || [ -f $PLAN/vllm_eager.done ]; do sleep 5; done
  export CUDA_VISIBLE_DEVICES=$([ -f $PLAN/vllm_eager.done ] && echo 1 || echo 0)
  step sglang-exactness env OUT=$PLAN/sglang SGLANG_SITE=/tmp/engines/$SGLANG/site ATTN_SCHED_GPU_CASES=20000 \
    bash integration/gpu_run.sh exactness tests/gpu/test_exactness.py -k sgl_kernel
  step sglang-eager $RUN --engine sglang --env /tmp/engines/$SGLANG/env.sh --models qwen3-32b-tp4-rank \
    --variants off,on-replace --repeats 3 $SHORT --extra-server-args=--disable-cuda-graph --out $PLAN/sglang-eager
}

bench_extend_job() {  # the synthetic eager extend bench after capture-scoped routing (issue 12), vLLM's library
  step bench-extend env $VLLM_FA3 OUT=$PLAN/bench bash integration/gpu_run.sh bench --preset qwen3-32b-tp4 \
    --preset gpt-oss-120b-like --mode extend --batch 1 16 --context 4096 --tag extend-after-routing
}

sglang_graphs_job() {  # SGLang with CUDA graphs under capture-scoped routing, after the bench (one GPU, quiet):
  # Gemma-3-like (sliding windows, which SGLang's own precompute leaves per layer) on 3 fresh servers per
  # variant, then dense Qwen3 (which it covers) on one
  until [ ! -f $PLAN/bench_extend.started ] || [ -f $PLAN/bench_extend.done ]; do sleep 5; done
  local graphs=(--engine sglang --env /tmp/engines/$SGLANG/env.sh --variants off,on-replace --workloads decode-c4
    --override decode-c4:output=256,prompts=8 --extra-server-args "--cuda-graph-max-bs 16")
  step sglang-gemma-graphs $RUN "${graphs[@]}" --models gemma-3-like --repeats 3 --out $PLAN/sglang-gemma-graphs
  step sglang-graphs $RUN "${graphs[@]}" --models qwen3-32b-tp4-rank --repeats 1 --out $PLAN/sglang-graphs
}

# The A/B jobs (issues 20/21): CUDA graphs, 1 cold warm-up server then REPEATS (5) fresh servers per variant,
# alternating; a short decode workload, logprobs and a 2 s profile window (kernel census, host time per step) on
# every server. Job NAME runs its engine's checks first, then the runner with ${NAME^^}. A larger REPEATS grows a
# carried plan; TAG=h100 writes to vllm-gemma-h100 etc., a new plan beside a carried one of other cards (the
# runner refuses to mix cards in one plan).
AB=(--repeats "${REPEATS:-5}" --warmup 1 --workloads decode-c4 --override decode-c4:output=128,prompts=8 --profile-seconds 2)
VLLM_FLAGS="--max-cudagraph-capture-size 16 --max-num-seqs 16"
VLLM_BASE=(--engine vllm --env /tmp/engines/$VLLM/env.sh "${AB[@]}" --variants off,on)
VLLM_AB=("${VLLM_BASE[@]}" --extra-server-args "$VLLM_FLAGS")
SGLANG_AB=(--engine sglang --env /tmp/engines/$SGLANG/env.sh "${AB[@]}" --variants off,on-replace
  --extra-server-args "--cuda-graph-max-bs 16 --max-running-requests 16")
AB_JOBS=$(echo vllm_small sglang_small vllm_gemma sglang_eagle vllm_gptoss vllm_small_det sglang_gemma sglang_dense \
  vllm_small_nocompile)  # one line, single spaces
JOBS="vllm vllm_eager sglang bench_extend sglang_graphs $AB_JOBS"  # every job the wait and pack phases follow
SUFFIX=${TAG:+-$TAG}
# the host-bound small model with seeded weights (make_models.py --weights)
VLLM_SMALL=("${VLLM_AB[@]}" --models gemma-3-1b-like --out $PLAN/vllm-small$SUFFIX)
SGLANG_SMALL=("${SGLANG_AB[@]}" --models gemma-3-1b-like --out $PLAN/sglang-small$SUFFIX)
# Gemma-3-12B-like, dummy weights
VLLM_GEMMA=("${VLLM_AB[@]}" --models gemma-3-like --out $PLAN/vllm-gemma$SUFFIX)
# SGLang's speculative path: Qwen3-32B TP4 rank + an EAGLE3 draft (topk 1, 3 steps, 4 draft tokens), so target
# verify and draft decode run with the plugin in a real engine; dummy weights
SGLANG_EAGLE=("${SGLANG_AB[@]}" --models qwen3-32b-tp4-rank+eagle3 --out $PLAN/sglang-eagle$SUFFIX)
# gpt-oss-20b-like (alternating sliding 128 / full, sinks, MoE), the live vLLM case of FA3 with AOT scheduling
# off; needs the part's MoE ops; dummy weights
VLLM_GPTOSS=("${VLLM_AB[@]}" --models gpt-oss-20b-like --out $PLAN/vllm-gptoss$SUFFIX)
# the small model with Inductor's deterministic mode on every server (no timing-based choice of reduction configs,
# which torch says shift numerics): do fresh plugin-off servers then agree bitwise (docs/vllm-logprob-nondeterminism.md)
VLLM_SMALL_DET=("${VLLM_AB[@]}" --models gemma-3-1b-like --server-env TORCHINDUCTOR_DETERMINISTIC=1
  --out $PLAN/vllm-small-det$SUFFIX)
# the small model without torch.compile: decode in full CUDA graphs, prefill eager, no Inductor kernels at all.
# Fresh servers' bitwise classes follow the GPU times (Triton configs, likely) of Inductor's fused add-RMSNorm
# reductions, which TORCHINDUCTOR_DETERMINISTIC=1 did not pin (vllm_small_det); here vLLM's own CUDA kernels run
# instead, so the small model's bitwise check can fail (docs/vllm-logprob-nondeterminism.md)
VLLM_SMALL_NOCOMPILE=("${VLLM_BASE[@]}" --models gemma-3-1b-like
  --extra-server-args "$VLLM_FLAGS --compilation-config '{\"mode\": \"NONE\", \"cudagraph_mode\": \"FULL_DECODE_ONLY\"}'"
  --out $PLAN/vllm-small-nocompile$SUFFIX)
# SGLang's two modes on the mixed-window model (its precompute leaves the sliding layers per layer), and the dense
# model against the seed PR's per-layer baseline (issue 20, runs 3; ~16 servers each: two sessions, resumed)
SGLANG_GEMMA=("${SGLANG_AB[@]}" --models gemma-3-like --variants off,on-replace,on-keep-native
  --out $PLAN/sglang-gemma$SUFFIX)
SGLANG_DENSE=("${SGLANG_AB[@]}" --models qwen3-32b-tp4-rank --variants seed-baseline,off,on-replace
  --out $PLAN/sglang-dense$SUFFIX)

vllm_checks() {  # the exactness suites on the engine's FA3 library and fa3-fwd (.gpu/fa3_fwd carried beside
  # the part), then host time per call (~2 min)
  [ -f $PLAN/vllm/gpu-exactness.json ] ||
    step vllm-exactness env $VLLM_FA3 OUT=$PLAN/vllm ATTN_SCHED_GPU_REQUIRED=0 ATTN_SCHED_GPU_CASES=5000 \
      bash integration/gpu_run.sh exactness -k "not sgl_kernel"
  [ -f $PLAN/vllm/host-overhead.json ] ||
    step vllm-host env $VLLM_FA3 OUT=$PLAN/vllm bash integration/gpu_run.sh host --repeats 100 --loop 100
}

sglang_checks() {  # sgl_kernel's exactness suite and the guard's GPU test (~15 s)
  [ -f $PLAN/sglang/gpu-exactness.json ] ||
    step sglang-exactness env OUT=$PLAN/sglang SGLANG_SITE=/tmp/engines/$SGLANG/site ATTN_SCHED_GPU_REQUIRED=0 \
      ATTN_SCHED_GPU_CASES=5000 bash integration/gpu_run.sh exactness -k sgl_kernel
}

ab_job() {  # ab_job NAME: the engine's checks, then the A/B step NAME (vllm_small: step vllm-small). On GPU N > 0
  # the servers take the engine's default port + 10 N, so two jobs of one engine side by side on a multi-GPU
  # machine (`vllm vllm_gptoss:0 vllm_small_nocompile:1`) do not meet on a port
  local -n args=${1^^}
  local gpu=${CUDA_VISIBLE_DEVICES:-0} port=()
  [[ $gpu =~ ^[1-9][0-9]*$ ]] && port=(--port $(($([ "${1%%_*}" = vllm ] && echo 8000 || echo 30000) + 10 * gpu)))
  "${1%%_*}_checks"
  step "${1//_/-}" $RUN "${args[@]}" "${port[@]}"
}
for job in $AB_JOBS; do eval "${job}_job() { ab_job $job; }"; done

start() {  # start NAME GPU [AFTER]: run NAME_job detached on that GPU, from the copy of the checkout, once job
  # AFTER is done (one GPU, one job at a time: a second A/B on the same card would skew both)
  rm -f "$PLAN/$1.done" && touch "$PLAN/$1.started"
  setsid bash -c "${3:+until [ -f $PLAN/$3.done ]; do sleep 5; done; }export CUDA_VISIBLE_DEVICES=$2; cd $REPO &&
    source integration/gpu_plan.sh --functions && ${1}_job; touch $PLAN/$1.done" > "$PLAN/$1.job.log" 2>&1 < /dev/null &
  echo "started the $1 job (pid $!)${3:+, after the $3 job}; follow it with: bash integration/gpu_plan.sh wait SECONDS"
}

setup() {  # the checkout's copy the jobs run from; results an earlier (given back) machine brought back
  rm -rf "$REPO" && mkdir -p "$REPO" && tar --exclude=./.engines --exclude=./.git -cf - . | tar -xf - -C "$REPO"
  # a packed plan.tgz as brought back: its data, not its job markers (those jobs died with the machine)
  [ ! -d .carry/state ] || tar -C .carry/state --exclude='*.started' --exclude='*.done' --exclude='*.job.log' -cf - . |
    tar -xf - -C "$PLAN"
}

start_jobs() {  # start_jobs JOB:GPU...: jobs named for one GPU run one after another, in the order given
  local job; local -A last=()
  for job in "$@"; do start "${job%%:*}" "${job#*:}" "${last[${job#*:}]:-}"; last[${job#*:}]=${job%%:*}; done
}

pack() {
  mkdir -p "${OUT:-$PLAN/out}"
  { cat "$PLAN/steps.log" 2>/dev/null; for j in $JOBS; do
      [ -f "$PLAN/$j.started" ] && echo "$j job: $([ -f $PLAN/$j.done ] && echo done || echo running)"; done
    for d in "$PLAN"/*/; do [ -f "$d/results.json" ] && python3 -m integration.serve_ab status --out "$d" 2>&1 | tail -n 3; done
  } > "${OUT:-$PLAN/out}/status.txt" 2>&1
  (cd "$PLAN" && tar --exclude='*/traces' --exclude='*.json.gz' --exclude=./repo --exclude=./out -czf "${OUT:-$PLAN/out}/plan.tgz" .)
  cat "${OUT:-$PLAN/out}/status.txt"
}

[ "${1:-}" = "--functions" ] && return 0
case "${1:-}" in
  vllm)
    bash integration/engines/install.sh $VLLM $([ -d /tmp/parts/$VLLM ] && echo /tmp/parts/$VLLM) || exit 1
    python3 integration/models/make_models.py --out /tmp/models --weights || exit 1
    setup; shift; [ $# -gt 0 ] || set -- vllm:0 vllm_eager:1; start_jobs "$@" ;;
  park)
    [ -n "${2:-}" ] || { echo "gpu_plan.sh park NAME: NAME missing (e.g. $SGLANG)" >&2; exit 2; }
    mkdir -p /tmp/parts/$2 && cp .engines/$2/* /tmp/parts/$2/ && ls -l /tmp/parts/$2 ;;
  sglang)
    bash integration/engines/install.sh $SGLANG /tmp/parts/$SGLANG || exit 1
    [ -f /tmp/models/gemma-3-1b-like/model.safetensors ] ||
      python3 integration/models/make_models.py --out /tmp/models --weights || exit 1
    [ -d "$REPO" ] || setup; shift; [ $# -gt 0 ] || set -- sglang:any; start_jobs "$@" ;;
  wait)
    end=$((SECONDS + ${2:-60}))
    while [ $SECONDS -lt $end ]; do
      busy=0; for j in $JOBS; do [ -f $PLAN/$j.started ] && [ ! -f $PLAN/$j.done ] && busy=1; done
      [ $busy = 1 ] || break; sleep 10
    done
    pack ;;
  estimate)
    [[ " $AB_JOBS " == *" ${2:-} "* ]] ||
      { echo "gpu_plan.sh estimate: unknown job '${2:-}'; accepted: ${AB_JOBS// /, }" >&2; exit 2; }
    declare -n args=${2^^}
    python3 -m integration.serve_ab run "${args[@]}" --dry-run | tail -n 1 ;;
  *) echo "gpu_plan.sh: unknown phase '${1:-}'; accepted: vllm, park NAME, sglang, wait SECONDS, estimate JOB" >&2
     exit 2 ;;
esac
