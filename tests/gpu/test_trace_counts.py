"""The serving A/B's trace parser on real torch.profiler traces of real FA3 kernels.

The same kind of chrome trace the engines' profilers write (torch.profiler, CUDA activity), from
the bench's engine-shaped step: FA3 scheduling itself in every layer, engine-style precompute,
and the plugin inside a replayed CUDA graph. The parser's per-step counts must match what the
profiler's own in-memory events say and what each variant is built to launch.
"""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from attn_sched_plugin.bench.presets import PRESETS
from attn_sched_plugin.bench.step import Step
from attn_sched_plugin.bench.timing import capture, prepare_launches
from integration.serve_ab import trace

pytestmark = pytest.mark.gpu
STEPS = 5


def eager_step(step: Step, variant: str):
    """One eager step of ``variant``, with the engine's host precompute where it has one."""
    def run():
        if variant == "engine":
            step.engine_precompute()
        step.run(variant, captured=False)

    return run


def _counts(tmp_path, name, run) -> dict:
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(STEPS):
            run()
        torch.cuda.synchronize()
    path = tmp_path / name
    prof.export_chrome_trace(str(path))
    return trace.count(path)


def test_prepare_per_step_from_real_traces(vllm_build, record, tmp_path):
    p = PRESETS["gemma-3-27b-like"]._replace(layers=12)  # 5 local : 1 global, two schedules per step
    step = Step(p, vllm_build, 4, 2048, 1, torch.device("cuda"))
    fa3 = _counts(tmp_path, "fa3.json", eager_step(step, "fa3"))
    engine_run = eager_step(step, "engine")
    engine = _counts(tmp_path, "engine.json.gz", engine_run)
    graph = capture(lambda: step.run("plugin"))
    plugin = _counts(tmp_path, "plugin-graph.json.gz", graph.replay)
    got = {name: trace.per_step(c, p.layers) for name, c in (("fa3", fa3), ("engine", engine), ("plugin", plugin))}
    names = sorted({str(ev.get("name", ""))[:150] for ev in trace.events(tmp_path / "fa3.json")
                    if str(ev.get("cat", "")).lower() == "kernel" and "flash" in str(ev.get("name", ""))})
    record(layers=p.layers, steps=STEPS, counts={"fa3": fa3, "engine": engine, "plugin": plugin}, per_step=got,
           flash_kernel_names=names)
    assert all(g["steps"] == STEPS for g in got.values())  # one FA3 main kernel per layer and step
    assert got["fa3"]["prepare_per_step"] == p.layers
    assert got["engine"]["prepare_per_step"] == prepare_launches(engine_run)
    assert got["plugin"]["prepare_per_step"] == step.distinct_shapes() == prepare_launches(graph.replay)
