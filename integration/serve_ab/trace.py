"""Per-decode-step kernel census from a chrome trace (.json / .json.gz / .json.xz) of one process / rank.

Method: in a window of pure decode, every attention layer makes exactly one FA3 forward call per
step, and each call runs one main kernel (``FlashAttnFwdSm90``; a split-KV combine is a separate
``FlashAttnFwdCombine``). So ``steps = FA3 main kernels / attention layers`` and every count or GPU
time per step is the window's total / steps. Both come from the same window, so steps the profiler
cut at its edges cancel out. Kernels replayed from CUDA graphs appear as kernel events like eager
ones. GPU busy is the union of all device intervals (kernels, memsets, memcpys); the step period is
the span from the first to the last device event / steps. Host time per step comes from the
engine's own per-step CPU annotation where it records one (vLLM's worker wraps every
``execute_model`` in ``execute_context_N(..)_generation_M(..)``; decode steps have ``context_0``).
Both engines' traces also hold the CUDA runtime calls (SGLang's window records GPU activity only,
which still includes them), so host time is also read engine-neutrally from the graph launches: a
CUDA-graph decode step launches its graph once, the gap between two launches of the launching thread
is the host's step period, and the gap less the time spent blocked in synchronising calls
(``*Synchronize``, ``cudaMemcpy*``) is the host's busy time per step. The device events of one graph
replay carry its ``cudaGraphLaunch``'s correlation id: their span less their busy time is how long
the GPU idled between the graph's own nodes (launch latency, dependency waits), time a removed node
gives back beyond its kernel's duration. Every device event is also tallied by its name (first
``NAME_CHARS`` characters): fresh servers of one engine can pick other GEMM or Triton variants for the
same step, and only the names and their times show which (docs/vllm-logprob-nondeterminism.md). A
Triton kernel keeps its name whichever config was picked, so each kernel name also gets its launch
configurations: block size, registers per thread and shared memory, what a config compiles to (the
grid follows the shape and is left out).
Traces are not needed after this: the census is what is kept, with one short excerpt per server (the
events the census reads over a few graph launches, ``excerpt``) as real test data for this parser.
"""

from __future__ import annotations

import gzip
import json
import lzma
import re
import statistics
from pathlib import Path

PREPARE = "prepare_varlen_num_blocks"
FA3_MAIN = "FlashAttnFwdSm90"
COMBINE = "FlashAttnFwdCombine"
FILL = re.compile(r"fill|memset", re.IGNORECASE)
DEVICE = {"kernel", "gpu_memset", "gpu_memcpy"}
DECODE_STEP = re.compile(r"^execute_context_0\(0\)_generation_\d+")
KINDS = ("fa3_main", "combine", "prepare", "memset_fill", "other")
GRAPH_LAUNCH = "cudaGraphLaunch"
BLOCKING = re.compile(r"Synchronize|^cudaMemcpy")
NAME_CHARS = 240
EXCERPT_LAUNCHES = 12
# beside each server's traces (rank 0, a few graph launches): real test data for the census (``excerpt``)
EXCERPT_FILE = "excerpt.trace.json"


def _open(path: Path, mode: str):
    opener = {".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)  # committed excerpts are .xz
    return opener(path, mode, encoding="utf-8")


def events(path: Path) -> list[dict]:
    with _open(path, "rt") as f:
        data = json.load(f)
    out = data.get("traceEvents", []) if isinstance(data, dict) else data
    return [ev for ev in out if isinstance(ev, dict)]


def device_events(evs: list[dict]) -> list[dict]:
    """Kernels, memsets and memcpys: what ran on the GPU."""
    return [ev for ev in evs if str(ev.get("cat", "")).lower() in DEVICE]


def is_graph_launch(ev: dict) -> bool:
    """A ``cudaGraphLaunch`` runtime call: its correlation id is carried by the replay's device events."""
    return ev.get("cat") == "cuda_runtime" and GRAPH_LAUNCH in str(ev.get("name", ""))


def kind(ev: dict) -> str:
    name = str(ev.get("name", ""))
    for key, marker in (("prepare", PREPARE), ("fa3_main", FA3_MAIN), ("combine", COMBINE)):
        if marker in name:
            return key
    return "memset_fill" if str(ev.get("cat", "")).lower() == "gpu_memset" or FILL.search(name) else "other"


def _busy(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def count(path: Path) -> dict:
    """``count_events`` of the trace file ``path``."""
    return count_events(events(path), path.name)


def count_events(evs: list[dict], file: str) -> dict:
    """Counts and GPU time (us) per kernel kind, busy and span of the device events, host step times."""
    device = device_events(evs)
    counts = {k: 0 for k in KINDS}
    gpu_us = {k: 0.0 for k in KINDS}
    by_name: dict[str, list] = {}
    launch: dict[str, set] = {}
    intervals = []
    for ev in device:
        k = kind(ev)
        counts[k] += 1
        dur = float(ev.get("dur", 0.0))
        gpu_us[k] += dur
        name = str(ev.get("name", ""))[:NAME_CHARS]
        tally = by_name.setdefault(name, [0, 0.0])
        tally[0] += 1
        tally[1] += dur
        args = ev.get("args") or {}
        if "block" in args:
            config = (f"block {'x'.join(map(str, args['block']))}, {args.get('registers per thread')} regs, "
                      f"{args.get('shared memory')} B shared")
            launch.setdefault(name, set()).add(config)
        ts = float(ev.get("ts", 0.0))
        intervals.append((ts, ts + dur))
    host = [float(ev["dur"]) for ev in evs if ev.get("cat") == "user_annotation" and ev.get("ph") == "X"
            and DECODE_STEP.match(str(ev.get("name", "")))]
    return {"file": file, "prepare": counts["prepare"], "fa3_main": counts["fa3_main"], "counts": counts,
            "gpu_us": {k: round(v, 3) for k, v in gpu_us.items()}, "busy_us": round(_busy(intervals), 3),
            "by_name": {name: [n, round(us, 3)] for name, (n, us) in sorted(by_name.items())},
            "launch": {name: sorted(configs) for name, configs in sorted(launch.items())},
            "span_us": round(max(b for _, b in intervals) - min(a for a, _ in intervals), 3) if intervals else 0.0,
            "host_step_us": ({"median": statistics.median(host), "n": len(host)} if host else None),
            "graph_launch_us": graph_launches(evs), "graph_replay_us": graph_replays(replays(evs, device))}


def replays(evs: list[dict], device: list[dict]) -> list[list[dict]]:
    """The device events of each CUDA-graph replay (those carrying its launch's correlation id), in time
    order, replays in launch order."""
    launches = {(ev.get("args") or {}).get("correlation") for ev in evs if is_graph_launch(ev)}
    launches.discard(None)
    by_launch: dict = {}
    for ev in device:
        correlation = (ev.get("args") or {}).get("correlation")
        if correlation in launches:
            by_launch.setdefault(correlation, []).append(ev)
    out = [sorted(group, key=lambda ev: float(ev.get("ts", 0.0))) for group in by_launch.values()]
    return sorted(out, key=lambda group: float(group[0].get("ts", 0.0)))


def graph_replays(groups: list[list[dict]]) -> dict | None:
    """GPU span and busy time (us, medians) of one CUDA-graph replay, over the ``replays`` groups ``groups``;
    None without replayed device events."""
    intervals = [[(float(ev.get("ts", 0.0)), float(ev.get("ts", 0.0)) + float(ev.get("dur", 0.0))) for ev in group]
                 for group in groups]
    if not intervals:
        return None
    spans = [max(b for _, b in iv) - min(a for a, _ in iv) for iv in intervals]
    return {"span": round(statistics.median(spans), 3),
            "busy": round(statistics.median(_busy(iv) for iv in intervals), 3), "n": len(intervals)}


def graph_launches(evs: list[dict]) -> dict | None:
    """Host period and busy time (us, medians) between consecutive graph launches of the thread that
    launches most graphs; None with fewer than two launches."""
    runtime = [ev for ev in evs if ev.get("cat") == "cuda_runtime" and ev.get("ph") == "X"]
    by_thread: dict = {}
    for ev in runtime:
        by_thread.setdefault((ev.get("pid"), ev.get("tid")), []).append(ev)
    calls = max(by_thread.values(), key=lambda c: sum(map(is_graph_launch, c)), default=[])
    calls.sort(key=lambda e: float(e.get("ts", 0.0)))
    launches = [float(e["ts"]) for e in calls if is_graph_launch(e)]
    if len(launches) < 2:
        return None
    blocked = [0.0] * (len(launches) - 1)
    i = 0
    for ev in calls:
        ts = float(ev.get("ts", 0.0))
        while i < len(blocked) and ts >= launches[i + 1]:
            i += 1
        if i == len(blocked):
            break
        if ts >= launches[i] and BLOCKING.search(str(ev.get("name", ""))):
            blocked[i] += float(ev.get("dur", 0.0))
    gaps = [b - a for a, b in zip(launches, launches[1:])]
    return {"period": round(statistics.median(gaps), 3),
            "busy": round(statistics.median(g - w for g, w in zip(gaps, blocked)), 3), "n": len(gaps)}


def excerpt(evs: list[dict], dst: Path, launches: int = EXCERPT_LAUNCHES) -> bool:
    """Write to ``dst`` what the census reads of ``launches`` consecutive CUDA-graph launches from the middle of
    a trace's events ``evs``: metadata, runtime calls and annotations in that span, and the device events those
    calls launched: a few MB instead of tens (``.gz`` compresses); False (nothing written) with fewer launches."""
    starts = sorted(float(ev.get("ts", 0.0)) for ev in evs if is_graph_launch(ev))
    if len(starts) <= launches:
        return False
    first = (len(starts) - launches) // 2
    lo, hi = starts[first], starts[first + launches]
    host = [ev for ev in evs if ev.get("cat") in ("cuda_runtime", "user_annotation")
            and lo <= float(ev.get("ts", 0.0)) < hi]
    ids = {(ev.get("args") or {}).get("correlation") for ev in host} - {None}
    device = [ev for ev in device_events(evs) if (ev.get("args") or {}).get("correlation") in ids]
    with _open(dst, "wt") as f:
        json.dump({"traceEvents": [ev for ev in evs if ev.get("ph") == "M"] + host + device}, f)
    return True


def per_step(counts: dict, layers: int) -> dict:
    """Decode steps in the window and the census per step (None values without FA3 kernels)."""
    if counts["fa3_main"] == 0:
        return {"steps": 0.0, "prepare_per_step": None, "per_step": None}
    steps = counts["fa3_main"] / layers
    per = {"count": {k: n / steps for k, n in counts.get("counts", {}).items()},
           "gpu_us": {k: us / steps for k, us in counts.get("gpu_us", {}).items()}}
    if "busy_us" in counts:
        per["busy_us"], per["period_us"] = counts["busy_us"] / steps, counts["span_us"] / steps
    if "by_name" in counts:  # [count, GPU us] per step of every device event name
        per["by_name"] = {name: [n / steps, us / steps] for name, (n, us) in counts["by_name"].items()}
    return {"steps": steps, "prepare_per_step": counts["prepare"] / steps, "per_step": per}
