"""Host time the adapters add per engine step outside captures (issue 21), on CPU, no engine needed.

What runs on every step of a serving engine once graphs are captured:

* vLLM: each attention group's metadata ``build`` goes through ``adapters.vllm.stepping`` (the
  routes are told the phase);
* SGLang: each CUDA-graph replay runs ``init_forward_metadata_out_graph`` (0.5.13+) or
  ``init_forward_metadata_replay_cuda_graph`` (0.5.11-0.5.12) through SGLang's ``HookRegistry``
  BEFORE wrapper and our hook.

Both are timed against the same call without the plugin (ns per call, steady state: the phase
does not change), with one routed module as in a real server. ``--tree`` picks the source tree
measured, so one command runs a branch and ``main`` alike. Needs ``sglang`` importable (its
``hook_registry`` module has no other dependency); run it in the SGLang venv:
python benchmarks/step_hooks.py --tree . [--tree /tmp/main] [--out benchmarks/results/step-hooks.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import types

N, REPEATS = 20000, 25


def _per_call_ns(fn, *args) -> float:
    samples = []
    for _ in range(REPEATS):
        start = time.perf_counter_ns()
        for _ in range(N):
            fn(*args)
        samples.append((time.perf_counter_ns() - start) / N)
    return statistics.median(samples)


def _routed_module():
    from attn_sched_plugin.adapters.routing import EntryRoute

    module = types.ModuleType("engine_module")
    module.fa3 = lambda: None
    return EntryRoute(module, "fa3", lambda: None)


def vllm_build() -> dict:
    from attn_sched_plugin.adapters import vllm as adapter

    class Builder:
        def build(self, common_prefix_len, common_attn_metadata):
            return common_attn_metadata

    plain = Builder.build
    wrapped = adapter.stepping("build", plain)
    adapter._routes.append(_routed_module())
    builder = Builder()
    wrapped(builder, 0, None)  # the phase after captures: steady from here
    try:
        return {"plain_ns": _per_call_ns(plain, builder, 0, None), "plugin_ns": _per_call_ns(wrapped, builder, 0, None)}
    finally:
        adapter._routes.clear()


def sglang_replay() -> dict:
    from sglang.srt.plugins.hook_registry import HookType, _wrap_fn

    from attn_sched_plugin.adapters import sglang as adapter

    def out_graph(self, forward_batch, in_capture=False):
        return None

    hooked = _wrap_fn(out_graph, adapter.CALLBACK_HOOKS["init_forward_metadata_out_graph"], HookType.BEFORE)
    backend = types.SimpleNamespace(_disable_scheduler_metadata_precompute=False)
    adapter._state.route, adapter._state.active = _routed_module(), True
    hooked(backend, None, False)
    try:
        return {"plain_ns": _per_call_ns(out_graph, backend, None, False),
                "plugin_ns": _per_call_ns(hooked, backend, None, False)}
    finally:
        adapter._state.active, adapter._state.route = False, None


def measure(tree: str) -> dict:
    sys.path.insert(0, tree)
    results = {"vllm_build": vllm_build(), "sglang_replay_callback": sglang_replay()}
    for r in results.values():
        r["added_ns"] = round(r["plugin_ns"] - r["plain_ns"], 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", action="append", required=True, help="source tree root (repeatable)")
    parser.add_argument("--out")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.tree[0])))
        return
    runs = {}
    for tree in args.tree:  # one process per tree: each imports its own attn_sched_plugin
        rev = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        out = subprocess.run([sys.executable, __file__, "--child", "--tree", tree], capture_output=True, text=True,
                             check=True).stdout
        runs[tree] = {"commit": rev.stdout.strip() or "unknown", **json.loads(out.splitlines()[-1])}
    report = {"command": " ".join(["python", "benchmarks/step_hooks.py"] + sys.argv[1:]),
              "host": platform.processor() or platform.machine(), "python": platform.python_version(),
              "calls_per_sample": N, "samples": REPEATS, "statistic": "median ns per call", "runs": runs}
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
