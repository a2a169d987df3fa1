"""Timing the variants: CUDA graphs replayed alternately (decode, verify) or eager steps (extend).

All variants run in one process on the same card; each round replays them in a rotated order so
clock drift and thermal state spread evenly. Per variant: median step time from CUDA events, the
10-90 percentile spread, host time per step, and the prepare-kernel launches per step.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

PREPARE_KERNEL = "prepare_varlen_num_blocks"


def _summary(values: list[float]) -> dict:
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {"median": statistics.median(values), "p10": pick(0.10), "p90": pick(0.90)}


def capture(run: Callable[[], None], warmups: int = 2) -> torch.cuda.CUDAGraph:
    """Warm up eagerly on a side stream (as engines do before capture), then capture one step."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmups):
            run()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    torch.cuda.synchronize()
    return graph


def alternate(steps: dict[str, Callable[[], None]], host_work: dict[str, Callable[[], None]], replays: int,
              warmup: int = 20) -> dict[str, dict]:
    """Run every variant ``replays`` times, alternating; ``host_work`` runs before a variant's step
    (the engine-style precompute) and is counted in its host time."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            host_work.get(name, _nothing)()
            steps[name]()
    torch.cuda.synchronize()
    events = {n: [] for n in names}
    host = {n: [] for n in names}
    for r in range(replays):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            start.record()
            host_work.get(name, _nothing)()
            steps[name]()
            end.record()
            host[name].append((time.perf_counter() - t0) * 1e6)
            events[name].append((start, end))
        if r % 50 == 49:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    return {
        n: {"gpu_us": _summary([s.elapsed_time(e) * 1e3 for s, e in events[n]]), "host_us": _summary(host[n])}
        for n in names
    }


def prepare_launches(run: Callable[[], None]) -> int:
    """``prepare_varlen_num_blocks`` kernels in one call of ``run`` (a graph replay or an eager step)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if PREPARE_KERNEL in e.name and e.device_type.name == "CUDA")


def _nothing() -> None:
    return None
