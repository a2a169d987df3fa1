"""The ``attn-sched`` command: ``doctor`` and ``bench``."""

from __future__ import annotations

import argparse
import json
import sys


def _doctor(args) -> int:
    from .doctor import diagnose, render

    report = diagnose()
    print(json.dumps(report, indent=1) if args.json else render(report))
    return 0 if report["active"] else 1


def _bench(args) -> int:
    from .bench.main import main as bench_main

    return bench_main(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attn-sched", description="Check what attn-sched-plugin would do on this "
                                "machine (doctor), or time it against FA3 alone on a Hopper GPU (bench).")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("doctor", help="what the plugin would do here (exit 1 when it would be inactive)")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(func=_doctor)
    from .bench.main import add_arguments

    b = sub.add_parser("bench", help="time an engine-shaped attention step with and without the plugin (Hopper GPU)")
    add_arguments(b)
    b.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
