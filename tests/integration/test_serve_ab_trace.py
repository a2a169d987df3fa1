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
    assert counts == {"file": name, "prepare": 12 * 64, "fa3_main": 12 * 64}
    assert trace.per_step(counts, layers=64) == {"steps": 12.0, "prepare_per_step": 64.0}


def test_shared_metadata_is_one_per_step_even_with_cut_steps(tmp_path):
    events = decode_steps(20, 48, prepare_per_layer=False, precompute=2)[7:-50]  # window edges cut mid-step
    counts = trace.count(write(tmp_path / "t.json.gz", events))
    got = trace.per_step(counts, layers=48)
    assert 19 < got["steps"] < 20 and got["prepare_per_step"] == pytest.approx(2.0, abs=0.1)


def test_old_capitalised_category_counts_and_no_fa3_gives_none(tmp_path):
    counts = trace.count(write(tmp_path / "t.json", [kernel(PREPARE, cat="Kernel"), kernel(MAIN, cat="Kernel")]))
    assert (counts["prepare"], counts["fa3_main"]) == (1, 1)
    empty = trace.count(write(tmp_path / "e.json", [kernel("void other_kernel()")]))
    assert trace.per_step(empty, layers=4) == {"steps": 0.0, "prepare_per_step": None}


def test_real_trace_from_an_h200():
    """torch 2.11 profiler trace (CUDA activity) of 5 eager steps of 12 layers, vLLM's FA3 library
    scheduling in every layer (tests/gpu/test_trace_counts.py, benchmarks/results/gpu-trace-counts.json)."""
    path = Path(__file__).with_name("data") / "torch-2.11-h200-fa3-eager.trace.json.gz"
    counts = trace.count(path)
    assert (counts["prepare"], counts["fa3_main"]) == (60, 60)
    assert trace.per_step(counts, layers=12) == {"steps": 5.0, "prepare_per_step": 12.0}
