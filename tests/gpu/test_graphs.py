"""CUDA graphs on real FA3: metadata computed inside the capture, replayed with changing lengths."""

from __future__ import annotations

import os

import pytest
import torch

from attn_sched_plugin import activation, runtime
from attn_sched_plugin.bench.presets import PRESETS
from attn_sched_plugin.bench.step import Step
from attn_sched_plugin.bench.timing import capture, prepare_launches
from attn_sched_plugin.verify import bitwise_equal

pytestmark = pytest.mark.gpu
REPLAYS = int(os.environ.get("ATTN_SCHED_GPU_REPLAYS", "1000"))


@pytest.fixture(autouse=True)
def graph_wrappers():
    """Engines capture with the plugin's CUDAGraph wrappers installed (activation does it), so each capture has
    its metadata arena: so do these tests."""
    activation.PROCESS.graphs.install()
    yield
    activation.PROCESS.graphs.uninstall()


def _replay_against_eager(step: Step, graph, replays: int, idle: bool) -> int:
    """Replay with new lengths each time; compare with FA3 alone run eagerly. Returns mismatches."""
    mismatches = 0
    for r in range(replays):
        step.set_lengths(seed=100 + r)
        if idle and r % 3 == 0:  # idle requests, the DP-attention / prefill-CP situation
            step.cache_seqlens[1::4] = 0 if step.q_len == 1 else step.q_len
        graph.replay()
        step.run("fa3")
        mismatches += not bitwise_equal(step.out["plugin"], step.out["fa3"])
    torch.cuda.synchronize()
    return mismatches


@pytest.mark.parametrize("preset,q_len,batch,context", [
    ("qwen3-32b-tp4", 1, 8, 2048),
    ("gpt-oss-120b-like", 1, 16, 1024),
    ("gemma-3-27b-like", 4, 4, 2048),
    ("deepseek-v3-like-mla", 1, 8, 1024),
    ("gpt-oss-120b-like", 4, 8, 512),
])
def test_graph_replays_bitwise_equal_to_eager(vllm_build, record, preset, q_len, batch, context):
    p = PRESETS[preset]._replace(layers=min(PRESETS[preset].layers, 12))
    step = Step(p, vllm_build, batch, context, q_len, torch.device("cuda"))
    graph = capture(lambda: step.run("plugin"))
    assert graph._attn_sched_arena.used > 0  # the replays read the step's metadata from the capture's arena
    launches = prepare_launches(graph.replay)
    mismatches = _replay_against_eager(step, graph, REPLAYS, idle=True)
    record(replays=REPLAYS, mismatches=mismatches, prepare_launches=launches, distinct=step.distinct_shapes(),
           layers=p.layers)
    assert mismatches == 0
    assert launches == step.distinct_shapes()  # one metadata kernel per distinct shape per step


def test_eager_metadata_never_reaches_a_capture(vllm_build, record):
    """The hazard in the notes: warm-ups compute metadata eagerly in the same step as the capture.
    The capture must compute its own (recorded) metadata, or replays with new lengths go wrong."""
    p = PRESETS["qwen3-32b-tp4"]._replace(layers=4)
    step = Step(p, vllm_build, 8, 2048, 1, torch.device("cuda"))
    runtime.new_step()
    layer_calls = lambda: [step.wrapped(**step.layer_kwargs(i), out=step.out["plugin"][i]) for i in range(p.layers)]  # noqa: E731
    layer_calls()  # eager warm-up, same step, no new_step() before the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        layer_calls()
    mismatches = _replay_against_eager(step, graph, 200, idle=False)
    record(mismatches=mismatches)
    assert mismatches == 0


def test_engine_style_precompute_with_stale_parameters_is_what_we_avoid(vllm_build, record):
    """Control: metadata computed eagerly once and baked into a graph goes stale at replay
    (the bug class the plugin's capture-context rule prevents). Documents that the suite can fail."""
    p = PRESETS["qwen3-32b-tp4"]._replace(layers=2)
    step = Step(p, vllm_build, 8, 2048, 1, torch.device("cuda"))
    step.engine_precompute()
    stale = step.engine_buffers[0].clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(p.layers):
            step.build.forward(**step.layer_kwargs(i), out=step.out["plugin"][i], scheduler_metadata=stale)
    mismatches = _replay_against_eager(step, graph, 50, idle=False)
    record(stale_mismatches=mismatches)
    assert mismatches > 0


def test_graph_replays_are_counted(vllm_build, record):
    """Issue 14: N replays of a captured step add N x what its capture avoided (layers - distinct shapes)."""
    p = PRESETS["gpt-oss-120b-like"]._replace(layers=12)
    step = Step(p, vllm_build, 8, 1024, 1, torch.device("cuda"))
    before = activation.PROCESS.graphs.totals()
    graph = capture(lambda: step.run("plugin"))
    replays = 100
    for _ in range(replays):
        graph.replay()
    torch.cuda.synchronize()
    after = activation.PROCESS.graphs.totals()
    per_replay = p.layers - step.distinct_shapes()
    got = {name: after[name] - before[name] for name in after}
    record(replays=replays, per_replay=per_replay, counted=got)
    assert got == {"graphs": 1, "replays": replays, "launches_avoided": replays * per_replay}


ACTIVATION = 1152  # bf16 elements: a small activation (the caching allocator's small pool, as FA3's metadata)


def _activation_offsets(step: Step, variant: str) -> list[int]:
    """Where the activation each layer makes after attention lands in the captured step, as an offset from
    the capture's first allocation (the graph's pool is new per capture, its addresses are not)."""
    ptrs, first = [], []
    step.after_layer = lambda: ptrs.append(torch.empty(ACTIVATION, dtype=torch.bfloat16, device="cuda").data_ptr())

    def run():
        ptrs.clear()
        marker = torch.empty(ACTIVATION, dtype=torch.bfloat16, device="cuda")
        step.run(variant)
        first[:] = [marker.data_ptr()]

    try:
        capture(run)  # warm-ups first, then the capture: ``ptrs`` ends up holding the capture's
    finally:
        step.after_layer = None
    return [ptr - first[0] for ptr in ptrs]


def _layouts(vllm_build, record) -> tuple[list[int], list[int]]:
    """Each layer's next-activation offset in a captured 12-layer mixed-window step: FA3 alone, the plugin."""
    p = PRESETS["gemma-3-27b-like"]._replace(layers=12)  # sliding and full layers: two metadata tensors per step
    step = Step(p, vllm_build, 4, 1024, 1, torch.device("cuda"))
    alone, plugin = _activation_offsets(step, "fa3"), _activation_offsets(step, "plugin")
    record(layers=p.layers, fa3_alone=alone, plugin=plugin)
    assert len(alone) == len(plugin) == p.layers
    return alone, plugin


def test_metadata_held_in_the_graphs_pool_moves_the_captured_steps_later_allocations(vllm_build, record):
    """Control, the hypothesis of docs/graph-memory-layout.md: without the wrappers a capture has no arena, so
    the step cache holds its metadata in the graph's pool, and the layers' next activations land elsewhere than
    with FA3 alone. Documents that the layout test below can fail."""
    activation.PROCESS.graphs.uninstall()
    alone, plugin = _layouts(vllm_build, record)
    assert plugin != alone


def test_the_plugin_leaves_a_captured_steps_memory_layout_as_fa3_alone_has_it(vllm_build, record):
    """Plugin-on vLLM servers without torch.compile ran the kernels around attention slower at hundreds of
    graph positions, the same positions on every server: the signature of other addresses. Each layer's next
    activation must land where it lands with FA3 alone: the step's metadata lives in the capture's arena."""
    alone, plugin = _layouts(vllm_build, record)
    assert plugin == alone
