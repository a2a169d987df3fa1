"""``attn-sched bench --tp N``: one process per GPU, each timing its shard of the heads.

Each rank runs its own plugin instance on its own device (as inside an engine's TP workers),
with an all-reduce of a hidden-size tensor between layers as the engines do, captured in the
same CUDA graphs. On CPU (gloo) the same layout runs once, untimed: a dry run of the process
layout for machines without GPUs.
"""

from __future__ import annotations

import functools
import socket
import sys
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .. import activation, stats
from ..hookspecs import hookimpl
from ..verify import bitwise_equal
from .builds import load
from .output import plot, table, write_json
from .presets import MODES, PRESETS, grid
from .run import environment, point
from .step import VARIANTS, Step


class _DeviceRecorder:
    """Observer: the devices metadata was computed on, to show each rank stays on its own."""

    def __init__(self):
        self.devices: set = set()

    @hookimpl
    def attn_sched_metadata_computed(self, event) -> None:
        self.devices.add(event.context[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, world: int, port: int, load_build: Callable, points: list[tuple], replays: int,
              device_type: str, results) -> None:
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    recorder = _DeviceRecorder()
    activation.PROCESS.hooks.manager.register(recorder)
    build = load_build()
    out = []
    for name, mode, batch, context in points:
        preset = PRESETS[name].sharded(world)
        hidden = torch.ones(batch * MODES[mode], preset.hidden, dtype=torch.bfloat16, device=device)
        all_reduce = functools.partial(dist.all_reduce, hidden)
        if device_type == "cuda":
            r = point(preset, build, batch, context, mode, replays, device, after_layer=all_reduce)
        else:
            r = _dry_point(preset, build, batch, context, mode, device, all_reduce)
        out.append({**r, "rank": rank, "world": world, "metadata_devices": sorted(map(str, recorder.devices))})
        recorder.devices.clear()
    results.put((rank, out))
    dist.barrier()
    dist.destroy_process_group()


def _dry_point(preset, build, batch, context, mode, device, all_reduce) -> dict:
    """One eager step of every variant, untimed: exactness and metadata counts only."""
    step = Step(preset, build, batch, context, MODES[mode], device, after_layer=all_reduce)
    step.engine_precompute()
    before = stats.snapshot()["intercepted"]["computed"]
    for v in VARIANTS:
        step.run(v)
    return {"preset": preset.name, "mode": mode, "batch": batch, "context": context, "heads": preset.num_heads,
            "kv_heads": preset.num_kv_heads, "distinct_shapes": step.distinct_shapes(),
            "computed": stats.snapshot()["intercepted"]["computed"] - before,
            "bitwise_equal_to_fa3": {v: bitwise_equal(step.out[v], step.out["fa3"]) for v in ("engine", "plugin")}}


def run_ranks(world: int, load_build: Callable, points: list[tuple], replays: int, device_type: str) -> list[dict]:
    """Spawn ``world`` ranks and return every rank's results."""
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    port = _free_port()
    procs = [ctx.Process(target=rank_main, args=(r, world, port, load_build, points, replays, device_type, results))
             for r in range(world)]
    for p in procs:
        p.start()
    gathered = [results.get() for _ in procs]
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        raise RuntimeError(f"a rank failed: exit codes {[p.exitcode for p in procs]}")
    return [r for _, rank_results in sorted(gathered, key=lambda x: x[0]) for r in rank_results]


def launch(args) -> int:
    if torch.cuda.device_count() < args.tp:
        print(f"attn-sched bench: --tp {args.tp} needs {args.tp} GPUs, {torch.cuda.device_count()} visible",
              file=sys.stderr)
        return 2
    points = [(p.name, mode, batch, context) for p, mode, batch, context in grid(args)]
    results = run_ranks(args.tp, functools.partial(load, args.fa3), points, args.replays, "cuda")
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**environment(load(args.fa3), sys.argv[2:]), "tp": args.tp}
    write_json(args.out / f"{args.tag}.json", env, results)
    rank0 = [r for r in results if r["rank"] == 0]
    plot(args.out / f"{args.tag}.png", rank0, f"TP{args.tp} rank 0, {env['card']}, {env['fa3_build']}")
    print(table(results))
    exact = all(all(r["bitwise_equal_to_fa3"].values()) for r in results)
    own_device = all(r["metadata_devices"] == [str(r["rank"])] for r in results)
    print(f"ranks: {args.tp}; outputs bitwise equal: {'yes' if exact else 'NO'}; "
          f"metadata on each rank's own device: {'yes' if own_device else 'NO'}")
    return 0 if exact and own_device else 1
