"""Prepare launches per decode step from chrome traces: synthetic traces in the profiler's layout.

Names and categories are the ones torch.profiler (Kineto) writes for FA3 kernels: ``cat`` "kernel",
demangled names such as ``void flash::prepare_varlen_num_blocks_kernel<16, false>(...)`` and
``void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<...>>>(...)``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from integration.serve_ab import trace

PREPARE = "void flash::prepare_varlen_num_blocks_kernel<16, false>(int, int, int, int const*, int*, bool)"
MAIN = ("void cutlass::device_kernel<flash::enable_sm90_or_later<flash::FlashAttnFwdSm90<cute::tuple<cute::C<128>>, "
        "flash::CollectiveMainloopFwdSm90<2, true, false, true>>>>(flash::FlashAttnFwdSm90::Params)")
COMBINE = "void cutlass::device_kernel<flash::FlashAttnFwdCombine<cute::tuple<cute::C<16>>, 4, 256, 1>>(Params)"


def kernel(name, cat="kernel"):
    return {"ph": "X", "cat": cat, "name": name, "pid": 0, "tid": 7, "ts": 1.0, "dur": 2.0}


def decode_steps(steps, layers, prepare_per_layer: bool, precompute: int = 0):
    """Kernel events of ``steps`` decode steps: ``precompute`` prepare launches up front, then per layer
    an optional prepare, the main kernel and a combine; plus CPU-side events with the same names."""
    events = []
    for _ in range(steps):
        events += [kernel(PREPARE)] * precompute
        for _ in range(layers):
            events += ([kernel(PREPARE)] if prepare_per_layer else []) + [kernel(MAIN), kernel(COMBINE)]
        events += [kernel("void at::native::elementwise_kernel<128, 4>(int)"),
                   {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "args": {"kernel": PREPARE}},
                   {"ph": "X", "cat": "cpu_op", "name": "prepare_varlen_num_blocks"}]
    return events


def write(path, events, wrapped=True):
    data = {"schemaVersion": 1, "traceEvents": events} if wrapped else events
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            json.dump(data, f)
    else:
        path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("name, wrapped", [("r0.trace.json.gz", True), ("r0.pt.trace.json", True),
                                           ("bare.json", False)])
def test_per_layer_prepare_is_one_per_layer_per_step(tmp_path, name, wrapped):
    counts = trace.count(write(tmp_path / name, decode_steps(12, 64, prepare_per_layer=True), wrapped))
    assert (counts["file"], counts["prepare"], counts["fa3_main"]) == (name, 12 * 64, 12 * 64)
    assert counts["counts"] == {"fa3_main": 768, "combine": 768, "prepare": 768, "memset_fill": 0, "other": 12}
    got = trace.per_step(counts, layers=64)
    assert (got["steps"], got["prepare_per_step"], got["per_step"]["count"]["other"]) == (12.0, 64.0, 1.0)


def test_shared_metadata_is_one_per_step_even_with_cut_steps(tmp_path):
    events = decode_steps(20, 48, prepare_per_layer=False, precompute=2)[7:-50]  # window edges cut mid-step
    counts = trace.count(write(tmp_path / "t.json.gz", events))
    got = trace.per_step(counts, layers=48)
    assert 19 < got["steps"] < 20 and got["prepare_per_step"] == pytest.approx(2.0, abs=0.1)


def test_old_capitalised_category_counts_and_no_fa3_gives_none(tmp_path):
    counts = trace.count(write(tmp_path / "t.json", [kernel(PREPARE, cat="Kernel"), kernel(MAIN, cat="Kernel")]))
    assert (counts["prepare"], counts["fa3_main"]) == (1, 1)
    empty = trace.count(write(tmp_path / "e.json", [kernel("void other_kernel()")]))
    assert trace.per_step(empty, layers=4) == {"steps": 0.0, "prepare_per_step": None, "per_step": None}


def test_real_trace_from_an_h200():
    """torch 2.11 profiler trace (CUDA activity) of 5 eager steps of 12 layers, vLLM's FA3 library
    scheduling in every layer (tests/gpu/test_trace_counts.py, benchmarks/results/gpu-trace-counts.json)."""
    path = Path(__file__).with_name("data") / "torch-2.11-h200-fa3-eager.trace.json.gz"
    counts = trace.count(path)
    assert (counts["prepare"], counts["fa3_main"]) == (60, 60)
    assert counts["counts"] == {"fa3_main": 60, "combine": 60, "prepare": 60, "memset_fill": 0, "other": 0}
    assert counts["gpu_us"] == {"fa3_main": 1404.983, "combine": 180.258, "prepare": 112.187, "memset_fill": 0.0,
                                "other": 0.0}
    # some kernels overlap (the union is less than the sum); eager launches leave gaps in the span
    assert counts["busy_us"] == 1617.713 < sum(counts["gpu_us"].values())
    assert counts["span_us"] == 9873.037 and counts["host_step_us"] is None
    got = trace.per_step(counts, layers=12)
    assert (got["steps"], got["prepare_per_step"]) == (5.0, 12.0)
    assert got["per_step"]["busy_us"] == pytest.approx(323.54, abs=0.01)
    assert got["per_step"]["period_us"] == pytest.approx(1974.61, abs=0.01)


def timed(name, ts, dur, cat="kernel"):
    return {"ph": "X", "cat": cat, "name": name, "pid": 0, "tid": 7, "ts": ts, "dur": dur}


def test_busy_is_the_union_of_overlapping_device_intervals_and_host_steps_come_from_vllm_annotations(tmp_path):
    events = [timed(MAIN, 0, 10), timed(COMBINE, 5, 10), timed(PREPARE, 2, 2),  # one inside another
              timed("Memset (Device)", 30, 2, cat="gpu_memset"),
              timed("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<int>>()", 40, 1),
              timed("void other()", 50, 10),
              # vLLM 0.26 gpu_worker.annotate_profile names; a prefill step's annotation is not a decode step
              timed("execute_context_0(0)_generation_4(4)", 0, 300.0, cat="user_annotation"),
              timed("execute_context_0(0)_generation_4(4)", 400, 500.0, cat="user_annotation"),
              timed("execute_context_1(500)_generation_3(3)", 900, 9000.0, cat="user_annotation"),
              timed("execute_context_0(0)_generation_4(4)", 0, 1.0, cat="gpu_user_annotation")]
    counts = trace.count(write(tmp_path / "t.json", events))
    assert counts["counts"] == {"fa3_main": 1, "combine": 1, "prepare": 1, "memset_fill": 2, "other": 1}
    assert counts["busy_us"] == 15 + 2 + 1 + 10 and counts["span_us"] == 60
    assert counts["host_step_us"] == {"median": 400.0, "n": 2}


def test_host_time_between_graph_launches_excludes_blocking_calls(tmp_path):
    """Decode steps of 100 us each on the launching thread (tid 7): a graph launch, 60 us blocked in a
    synchronise or a copy, the rest host work; another thread's launches and a kernel are not counted."""
    events = [kernel(MAIN)]
    for step, blocked in enumerate((60.0, 60.0, 40.0, 60.0)):
        t = 1000.0 + 100.0 * step
        events += [timed("cudaGraphLaunch", t, 5.0, cat="cuda_runtime"),
                   timed("cudaStreamSynchronize" if step % 2 else "cudaMemcpyAsync", t + 10, blocked,
                         cat="cuda_runtime"),
                   timed("cudaLaunchKernel", t + 80, 3.0, cat="cuda_runtime")]
    events.append(timed("cudaGraphLaunch", 1400.0, 5.0, cat="cuda_runtime"))
    events += [dict(timed("cudaGraphLaunch", 1000.0 + 7 * i, 1.0, cat="cuda_runtime"), tid=9) for i in range(3)]
    got = trace.count(write(tmp_path / "t.json", events))["graph_launch_us"]
    assert got == {"period": 100.0, "busy": 40.0, "n": 4}
    assert trace.count(write(tmp_path / "e.json", [kernel(MAIN)]))["graph_launch_us"] is None


def test_a_graph_replays_gpu_span_and_busy_come_from_its_launchs_correlation(tmp_path):
    """Two replays (correlation 5 and 6) of 3 nodes each: 10 us kernels with 2 and 4 us idle between
    them; an eager kernel (correlation 9, a cudaLaunchKernel) and a replay's overlapping node."""
    def node(ts, dur, correlation):
        return dict(timed(MAIN, ts, dur), args={"correlation": correlation})

    events = [dict(timed("cudaGraphLaunch", 0, 5.0, cat="cuda_runtime"), args={"correlation": 5}),
              dict(timed("cudaGraphLaunch", 100, 5.0, cat="cuda_runtime"), args={"correlation": 6}),
              dict(timed("cudaLaunchKernel", 200, 5.0, cat="cuda_runtime"), args={"correlation": 9}),
              node(10, 10, 5), node(22, 10, 5), node(34, 10, 5), node(36, 2, 5),
              node(110, 10, 6), node(124, 10, 6), node(138, 10, 6), node(210, 50, 9)]
    got = trace.count(write(tmp_path / "t.json", events))["graph_replay_us"]
    assert got == {"span": (34 + 38) / 2, "busy": 30.0, "n": 2}
    assert trace.count(write(tmp_path / "e.json", [kernel(MAIN)]))["graph_replay_us"] is None


def test_device_events_are_tallied_by_name_per_step(tmp_path):
    """Two fresh servers can run the same kernel counts with other GEMM variants: the names tell them apart."""
    def short(name):
        return name[:trace.NAME_CHARS]
    long_name = "void gemm_" + "x" * 300
    events = decode_steps(4, 2, prepare_per_layer=False) + [timed(long_name, 0, 8.0)] * 4
    counts = trace.count(write(tmp_path / "t.json", events))
    assert counts["by_name"][short(MAIN)] == [8, 16.0] and counts["by_name"][short(COMBINE)] == [8, 16.0]
    assert counts["by_name"][short(long_name)] == [4, 32.0] and len(short(long_name)) < len(long_name)
    assert sum(n for n, _ in counts["by_name"].values()) == sum(counts["counts"].values())
    per = trace.per_step(counts, layers=2)["per_step"]["by_name"]
    assert per[short(MAIN)] == [2.0, 4.0] and per[short(long_name)] == [1.0, 8.0]
    real = trace.count(Path(__file__).with_name("data") / "torch-2.11-h200-fa3-eager.trace.json.gz")
    assert sum(n for name, (n, _) in real["by_name"].items() if trace.PREPARE in name) == 60
    assert sum(us for _, us in real["by_name"].values()) == pytest.approx(sum(real["gpu_us"].values()), abs=1e-6)


def test_each_kernel_name_keeps_its_launch_configs_not_its_grids(tmp_path):
    """Two Triton configs of one reduction share a name; block, registers and shared memory tell them apart."""
    def launched(block, regs, grid):
        return {**kernel("triton_red_fused_rms_norm_0"),
                "args": {"grid": grid, "block": block, "registers per thread": regs, "shared memory": 0}}
    events = decode_steps(2, 2, prepare_per_layer=False) + [launched([256, 1, 1], 40, [4, 1, 1]),
                                                            launched([256, 1, 1], 40, [8, 1, 1]),
                                                            launched([512, 1, 1], 32, [4, 1, 1])]
    got = trace.count(write(tmp_path / "t.json", events))["launch"]
    assert got == {"triton_red_fused_rms_norm_0": ["block 256x1x1, 40 regs, 0 B shared",
                                                   "block 512x1x1, 32 regs, 0 B shared"]}
    real = trace.count(Path(__file__).with_name("data") / "torch-2.11-h200-fa3-eager.trace.json.gz")["launch"]
    assert real and all(configs for configs in real.values())
    assert any(trace.PREPARE in name for name in real)


def test_an_excerpt_keeps_what_the_census_reads_of_a_few_graph_launches(tmp_path):
    """20 decode steps of 100 us: a graph launch replaying 2 layers (prepare, main, combine each) and an eager
    kernel with its launch; the excerpt of 4 launches from the middle is steps 8-11, census per step unchanged."""
    events = [{"ph": "M", "name": "process_name", "pid": 0, "args": {"name": "python"}}]
    for step in range(20):
        t, graph, eager = 1000.0 * step, 100 + 2 * step, 101 + 2 * step
        events += [dict(timed("cudaGraphLaunch", t, 5.0, cat="cuda_runtime"), args={"correlation": graph}),
                   dict(timed("cudaLaunchKernel", t + 50, 3.0, cat="cuda_runtime"), args={"correlation": eager}),
                   timed("execute_context_0(0)_generation_4(4)", t - 10, 90.0, cat="user_annotation"),
                   {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 0, "tid": 7, "ts": t + 1, "dur": 1.0},
                   dict(timed("void other()", t + 60, 5.0), args={"correlation": eager})]
        events += [dict(timed(name, t + 10 + 3 * i, 2.0), args={"correlation": graph})
                   for i, name in enumerate([PREPARE, MAIN, COMBINE] * 2)]
    full = write(tmp_path / "full.json", events)
    assert trace.excerpt(trace.events(full), tmp_path / "x.trace.json.gz", launches=4)
    got = trace.events(tmp_path / "x.trace.json.gz")
    launches = sorted(ev["ts"] for ev in got if ev["name"] == "cudaGraphLaunch")
    assert launches == [8000.0, 9000.0, 10000.0, 11000.0] and got[0]["ph"] == "M"
    assert not any(ev.get("cat") == "cpu_op" for ev in got)
    whole, part = (trace.count(f) for f in (full, tmp_path / "x.trace.json.gz"))
    assert part["counts"] == {"fa3_main": 8, "combine": 8, "prepare": 8, "memset_fill": 0, "other": 4}
    per_part, per_whole = (trace.per_step(c, 2)["per_step"] for c in (part, whole))
    assert all(per_part[k] == per_whole[k] for k in ("count", "gpu_us", "by_name"))
    # annotations open 10 us before their launch: 7990 is out, 11990 (before the 13th launch) is in
    assert part["graph_replay_us"]["n"] == 4 and part["host_step_us"]["n"] == 4
    assert not trace.excerpt(trace.events(full), tmp_path / "y.json", launches=20)
    assert not (tmp_path / "y.json").exists()
    with pytest.raises(TypeError):  # what the runner catches: an odd trace costs the excerpt, not the run
        trace.excerpt([dict(e, ts=None) for e in events], tmp_path / "z.json", 4)


def test_replays_group_a_launchs_device_events_in_time_order(tmp_path):
    """Device events carry their graph launch's correlation id, possibly out of order in the file."""
    def node(name, ts, correlation):
        return dict(timed(name, ts, 1.0), args={"correlation": correlation})
    evs = [dict(timed("cudaGraphLaunch", 100, 1.0, cat="cuda_runtime"), args={"correlation": 6}),
           dict(timed("cudaGraphLaunch", 0, 1.0, cat="cuda_runtime"), args={"correlation": 5}),
           node("b", 20, 5), node("a", 10, 5), node("c", 110, 6), node("eager", 50, 9),
           {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 11, "args": {"correlation": 5}}]
    got = trace.replays(evs, trace.device_events(evs))
    assert [[ev["name"] for ev in r] for r in got] == [["a", "b"], ["c"]]


NOCOMPILE = Path(__file__).resolve().parents[2] / "benchmarks/results/real-engines/vllm-small-nocompile-h100/runs"


@pytest.mark.parametrize("run, prepares", [("gemma-3-1b-like-tp1-r1-off", 26), ("gemma-3-1b-like-tp1-r1-on", 2)])
def test_the_census_of_real_vllm_graph_replays(run, prepares):
    """Committed excerpts of two real servers (vLLM 0.26, gemma-3-1b-like: 26 attention layers, full decode
    graphs, H100): 12 replays, each one decode step with 26 FA3 main kernels; plugin off, a prepare per layer;
    on, one per shape (sliding and full)."""
    counts = trace.count(NOCOMPILE / run / (trace.EXCERPT_FILE + ".xz"))
    replay = counts["graph_replay_us"]
    assert replay["n"] == 12 and counts["fa3_main"] == 12 * 26
    assert trace.per_step(counts, layers=26)["prepare_per_step"] == prepares
    assert 0 < replay["busy"] < replay["span"] < 6000  # a 1B model's step: about 5 ms of GPU span
