"""Kernel GPU time by position inside CUDA-graph replays: each variant's servers against the ``off`` ones.

    python3 benchmarks/graph_positions.py benchmarks/results/real-engines/vllm-small-nocompile-h100

A graph replays the same kernels in the same order every step, so the n-th kernel of a replay is the same
op on every server of one model. Per server (its trace excerpt, ``runs/<id>/excerpt.trace.json[.xz]``):
each position's median duration over the excerpt's replays, with FA3's prepare kernels left out (the ones
the plugin removes). Kernels a variant adds (the plugin's arena copies, one per shape) or lacks are matched
out of the sequences and listed apart, so that positions line up across variants. Per position: the median
over a variant's servers, and whether every server of the variant lies above (or below) every ``off`` server. With
exchangeable servers, a position is separated one way with probability 1 / C(n_off + n_variant, n_variant);
the count expected by chance is printed beside the observed one.

What the pattern tells: a slower clock or a slower kernel moves positions one way; the same ops working on
other addresses (another memory layout) move many single positions both ways, by the same amount on every
server of a variant, while the median position stays put (docs/graph-memory-layout.md).
"""

from __future__ import annotations

import math
import statistics
import sys
from collections import Counter
from difflib import SequenceMatcher
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from integration.serve_ab import trace  # noqa: E402
from integration.serve_ab.results import State  # noqa: E402

BASELINE = "off"
TOP = 8


def profile(path: Path) -> dict:
    """One server's graph replays: kernel ``names`` and median GPU ``us`` per position over the replays,
    the replay's ``prepare`` kernels (count, GPU us) and GPU ``span`` (us), medians. Replays of another
    length than the most common one (another graph) are left out."""
    evs = trace.events(path)
    replays = trace.replays(evs, trace.device_events(evs))
    if not replays:
        raise ValueError(f"{path}: no CUDA-graph replays")
    length = Counter(len(r) for r in replays).most_common(1)[0][0]
    replays = [r for r in replays if len(r) == length]
    prepares = [[ev for ev in r if trace.kind(ev) == "prepare"] for r in replays]
    kept = [[ev for ev in r if trace.kind(ev) != "prepare"] for r in replays]
    names = [[str(ev.get("name", ""))[:trace.NAME_CHARS] for ev in r] for r in kept]
    if any(n != names[0] for n in names):
        raise ValueError(f"{path}: replays of {length} kernels run different kernels")
    return {"names": names[0],
            "us": [statistics.median(float(r[i].get("dur", 0.0)) for r in kept) for i in range(len(names[0]))],
            "prepare": (len(prepares[0]), statistics.median(sum(float(ev.get("dur", 0.0)) for ev in p)
                                                            for p in prepares)),
            "span": trace.graph_replays(replays)["span"]}


def _sequence(servers: list[dict]) -> list[str]:
    names = servers[0]["names"]
    if any(p["names"] != names for p in servers):
        raise ValueError("one variant's servers run different kernel sequences in their graph replays")
    return names


def compare(base: list[dict], other: list[dict]) -> dict:
    """Position by position, ``other`` servers' profiles against ``base`` servers'. Kernels only one variant's
    replays run (matched out of the two sequences) are listed apart: names and summed median GPU us."""
    base_names, other_names = _sequence(base), _sequence(other)
    blocks = SequenceMatcher(None, base_names, other_names, autojunk=False).get_matching_blocks()
    pairs = [(b.a + k, b.b + k) for b in blocks for k in range(b.size)]

    def apart(servers: list[dict], names: list[str], matched: set[int]) -> dict:
        rest = [i for i in range(len(names)) if i not in matched]
        return {"names": Counter(names[i] for i in rest),
                "us": sum(statistics.median(p["us"][i] for p in servers) for i in rest)}

    slower, faster, shifts, by_name = [], [], [], Counter()
    for i, j in pairs:
        b, o = [p["us"][i] for p in base], [p["us"][j] for p in other]
        shift = statistics.median(o) - statistics.median(b)
        shifts.append(shift)
        by_name[base_names[i]] += shift
        if min(o) > max(b):
            slower.append(shift)
        elif max(o) < min(b):
            faster.append(shift)

    def medians(servers: list[dict]) -> tuple:
        return (statistics.median(p["prepare"][0] for p in servers), statistics.median(p["prepare"][1] for p in servers),
                statistics.median(p["span"] for p in servers))

    return {"positions": len(pairs), "slower": (len(slower), sum(slower)), "faster": (len(faster), sum(faster)),
            "total": sum(shifts), "median": statistics.median(shifts),
            "chance": len(pairs) / math.comb(len(base) + len(other), len(other)),
            "by_name": by_name.most_common(), "base": medians(base), "other": medians(other),
            "only_base": apart(base, base_names, {i for i, _ in pairs}),
            "only_other": apart(other, other_names, {j for _, j in pairs})}


def _excerpt(folder: Path, run_id: str) -> Path | None:
    return next(iter(sorted((folder / "runs" / run_id).glob(trace.EXCERPT_FILE + "*"))), None)


def report(folder: Path) -> list[str]:
    state = State.load(folder)
    groups: dict[str, dict[str, list]] = {}
    for rec in state.runs.values():
        path = _excerpt(folder, rec["id"])
        if rec["status"] == "ok" and rec["repeat"] > 0 and path is not None:  # warm-ups are not compared
            groups.setdefault(rec["model"], {}).setdefault(rec["variant"], []).append(profile(path))
    lines = []
    for model, variants in groups.items():
        base = variants.get(BASELINE, [])
        for variant, servers in variants.items():
            if variant == BASELINE or not base:
                continue
            c = compare(base, servers)
            lines += [
                f"== {model}: {variant} ({len(servers)} servers) against {BASELINE} ({len(base)}), "
                f"{c['positions']} kernels per graph replay in both (prepare left out); GPU us per replay, medians",
                f"  every {variant} server slower than every {BASELINE} one: {c['slower'][0]} positions, "
                f"{c['slower'][1]:+.1f} us",
                f"  every {variant} server faster: {c['faster'][0]} positions, {c['faster'][1]:+.1f} us",
                f"  expected by chance: {c['chance']:.1f} positions each way",
                f"  all positions: {c['total']:+.1f} us; the median position moves {c['median']:+.3f} us",
                f"  prepare kernels: {BASELINE} {c['base'][0]:g} x, {c['base'][1]:.1f} us; {variant} {c['other'][0]:g} x, "
                f"{c['other'][1]:.1f} us. GPU span per replay: {BASELINE} {c['base'][2]:.1f} us, {variant} "
                f"{c['other'][2]:.1f} us",
            ]
            for who, key in ((variant, "only_other"), (BASELINE, "only_base")):
                if c[key]["names"]:
                    kinds = ", ".join(f"{n} x {name[:60]}" for name, n in c[key]["names"].most_common())
                    lines.append(f"  kernels only {who} runs (left out above): {kinds}; {c[key]['us']:.1f} us")
            lines.append("  kernels by summed shift (most slower, most faster):")
            ranked = c["by_name"]
            for name, us in ranked[:TOP // 2] + ranked[-(TOP // 2):]:
                lines.append(f"    {us:+7.1f}  {name[:110]}")
    return lines


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for folder in argv:
        print("\n".join(report(Path(folder))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
