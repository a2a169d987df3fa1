"""Host cost of the plugin's CUDA-graph replay wrapper, in ns per replay, on CPU (issue 21).

A fake ``torch.cuda.CUDAGraph`` (its ``replay`` does nothing) is wrapped by ``GraphCounts.install()`` of the
source tree on ``PYTHONPATH``; a graph whose capture avoided launches is replayed N times and the time
per replay is compared with the unwrapped replay. ``--before TREE`` also measures another source tree
(e.g. a checkout of the previous version) in a subprocess, so one JSON holds both.

    PYTHONPATH=. python benchmarks/replay_overhead.py --before OLD_TREE \
        --out benchmarks/results/replay-overhead-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def _best_ns(fn, n: int, repeats: int) -> float:
    """The best of ``repeats`` runs of ``n`` calls, in ns per call (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / n)
    return best


def measure(n: int, repeats: int) -> dict:
    import torch

    from attn_sched_plugin import context

    try:  # the process's graph counts, whose observer checks the summary, as deployed
        from attn_sched_plugin.activation import PROCESS
        counts = PROCESS.graphs
    except ImportError:  # a tree from before process.Process (--before): module functions
        from attn_sched_plugin import graphs as counts, stats  # noqa: F401  stats set the summary check

    class FakeGraph:
        def capture_end(self):
            pass

        def replay(self):
            pass

    torch.cuda.CUDAGraph = FakeGraph
    torch.cuda.current_stream = lambda: SimpleNamespace(cuda_stream=1)
    context.capture_id = lambda stream: 7
    plain_graph = FakeGraph()
    plain = _best_ns(plain_graph.replay, n, repeats)
    counts.install()
    counts.book(7, 40)  # a 41-layer decode capture: 41 injected, 1 computed
    graph = FakeGraph()
    graph.capture_end()
    counted = _best_ns(graph.replay, n, repeats)
    return {"plain_replay_ns": round(plain, 1), "wrapped_replay_ns": round(counted, 1),
            "added_ns_per_replay": round(counted - plain, 1), "replays_counted": counts.totals()["replays"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="replays per run")
    parser.add_argument("--repeats", type=int, default=7, help="runs; the best is kept")
    parser.add_argument("--before", help="another source tree to measure too (in a subprocess)")
    parser.add_argument("--out", help="write the JSON here")
    parser.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json_only:
        print(json.dumps(measure(args.n, args.repeats)))
        return
    result = {"command": "PYTHONPATH=. python " + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
                         f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} (a shared machine: "
                         "compare within one run)",
              "method": f"best of {args.repeats} runs of {args.n} replays of a fake CUDAGraph whose replay does "
                        "nothing; added_ns_per_replay = wrapped - plain",
              "after": measure(args.n, args.repeats)}
    if args.before:
        env = dict(os.environ, PYTHONPATH=args.before)
        out = subprocess.run([sys.executable, __file__, "--json-only", "--n", str(args.n), "--repeats",
                              str(args.repeats)], env=env, capture_output=True, text=True, check=True, cwd=args.before)
        result["before"] = json.loads(out.stdout.strip().splitlines()[-1])
        commit = subprocess.run(["git", "-C", args.before, "rev-parse", "HEAD"], capture_output=True, text=True)
        result["before"]["tree"] = f"{args.before} at {commit.stdout.strip() or 'an unknown commit'}"
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
