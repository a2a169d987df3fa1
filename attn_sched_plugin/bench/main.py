"""``attn-sched bench``: arguments, and where results go."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .presets import MODES, PRESETS, grid

DEFAULT_BATCHES = (1, 4, 16, 64, 256)
DEFAULT_CONTEXTS = (512, 2048, 8192)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (sizes, counts); argparse names the option in its one-line error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; accepted values: a whole number >= 1")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", action="append", choices=sorted(PRESETS), help="repeatable; default qwen3-32b-tp4")
    p.add_argument("--mode", action="append", choices=sorted(MODES), help="repeatable; default decode")
    p.add_argument("--batch", type=positive_int, nargs="+", default=list(DEFAULT_BATCHES), metavar="N",
                   help=f"batch sizes (sequences per step); default {' '.join(map(str, DEFAULT_BATCHES))}")
    p.add_argument("--context", type=positive_int, nargs="+", default=list(DEFAULT_CONTEXTS), metavar="TOKENS",
                   help=f"KV lengths per sequence; default {' '.join(map(str, DEFAULT_CONTEXTS))}")
    p.add_argument("--replays", type=positive_int, default=200,
                   help="alternating replays per variant; default %(default)s (>= 200 for results)")
    p.add_argument("--fa3", default=None, help="FA3 build: vllm, vllm-lib:PATH or fa3_fwd (default: first found; "
                                               "ATTN_SCHED_FA3_LIB=PATH selects vllm-lib:PATH)")
    p.add_argument("--tp", type=positive_int, default=None, metavar="N",
                   help="tensor-parallel degree: one process per GPU (NCCL), heads sharded N ways, all-reduce "
                        "between layers (--tp 1 runs that layout on one GPU); default: no TP, one process")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), metavar="DIR",
                   help="directory for the JSON and PNG results; default %(default)s")
    p.add_argument("--tag", default="bench", help="file name stem of the results; default %(default)s")


def _no_gpu_reason() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible"
    major, minor = torch.cuda.get_device_capability()
    if major != 9:
        return f"GPU has compute capability {major}.{minor}, FA3 needs Hopper (9.x)"
    return None


def main(args) -> int:
    from .builds import NoBuild, load

    reason = _no_gpu_reason()
    if reason is None:
        try:
            build = load(args.fa3)
        except NoBuild as exc:
            reason = str(exc)
    if reason is not None:
        print(f"attn-sched bench: needs a Hopper GPU and an FA3 build: {reason}; run `attn-sched doctor` for details",
              file=sys.stderr)
        return 2
    if args.tp is not None:
        from .tp import launch

        return launch(args)
    return run_grid(args, build)


def run_grid(args, build) -> int:
    import torch

    from .output import plot, table, write_json
    from .run import environment, point

    device = torch.device("cuda", torch.cuda.current_device())
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment(build, sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:])
    results = []
    for preset, mode, batch, context in grid(args):
        results.append(point(preset, build, batch, context, mode, args.replays, device))
        write_json(args.out / f"{args.tag}.json", env, results)  # after every point: a cut run keeps its data
        print(f"  {preset.name} {mode} bs={batch} ctx={context} done", file=sys.stderr, flush=True)
        torch.cuda.empty_cache()
    plot(args.out / f"{args.tag}.png", results, f"{env['card']}, {env['fa3_build']}, torch {env['torch']}")
    print(table(results))
    exact = all(all(r["bitwise_equal_to_fa3"].values()) for r in results)
    print(f"results: {args.out / args.tag}.json/.png; outputs bitwise equal to FA3 alone: {'yes' if exact else 'NO'}")
    return 0 if exact else 1
