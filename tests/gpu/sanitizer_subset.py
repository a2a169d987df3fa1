"""A representative subset for ``compute-sanitizer --tool memcheck`` (run by integration/gpu_run.sh):
random calls of both builds (paged, MLA, windows, idle entries, splits) plus a captured mixed-window
step replayed with changing lengths. Exits non-zero on any mismatch; memcheck reports memory errors."""

from __future__ import annotations

import sys

import torch

from attn_sched_plugin.bench import builds
from attn_sched_plugin.bench.presets import PRESETS
from attn_sched_plugin.bench.step import Step
from attn_sched_plugin.bench.timing import capture
from attn_sched_plugin.verify import bitwise_equal

from .cases import fa3fwd_call, fa3fwd_case, run_cases, vllm_call, vllm_case


def main() -> int:
    vllm = builds.load()
    results = {
        "vllm": run_cases(vllm, vllm_case, vllm_call, 40, seed=7),
        "fa3_fwd": run_cases(builds.fa3_fwd(), fa3fwd_case, fa3fwd_call, 40, seed=8),
    }
    step = Step(PRESETS["gpt-oss-120b-like"]._replace(layers=4), vllm, 8, 512, 1, torch.device("cuda"))
    graph = capture(lambda: step.run("plugin"))
    graph_mismatches = 0
    for r in range(20):
        step.set_lengths(seed=r)
        graph.replay()
        step.run("fa3")
        graph_mismatches += not bitwise_equal(step.out["plugin"], step.out["fa3"])
    torch.cuda.synchronize()
    bad = graph_mismatches + sum(r["counts"].get("mismatches", 0) for r in results.values())
    print({k: r["counts"] for k, r in results.items()}, "graph mismatches:", graph_mismatches)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
