"""The report's kernel census per decode step: one row per variant, the median over its servers.

Per step (``trace.per_step``): count and GPU time of FA3 main, combine, prepare, memsets / fills and all
other kernels; GPU busy (union of device intervals), the kernel time beyond it (kernels that ran
concurrently: a removed prepare saves busy time only where it did not overlap another kernel, and FA3
launches its main kernel behind its prepare with programmatic dependent launch) and the step period;
host time of the engine's step where its profiler records one; the host's period and busy time between
CUDA-graph launches (both engines); the GPU's span and busy time of one graph replay. Ranks of a server
are averaged; records of an earlier runner (counts only) show the prepare column alone.
"""

from __future__ import annotations

import statistics

from .trace import KINDS

LABELS = {"fa3_main": "FA3 main", "combine": "combine", "prepare": "prepare", "memset_fill": "memset/fill",
          "other": "other"}


def _server(rec: dict) -> dict | None:
    """One server's census per step, ranks averaged; None without FA3 kernels."""
    ranks = [x for x in (rec.get("profile") or {}).get("ranks", []) if x.get("per_step")]
    if not ranks:
        return None
    mean = lambda f: statistics.fmean(f(x) for x in ranks)  # noqa: E731
    out = {f"{k}_n": mean(lambda x: x["per_step"]["count"][k]) for k in KINDS}
    out.update({f"{k}_us": mean(lambda x: x["per_step"]["gpu_us"][k]) for k in KINDS})
    out["busy_us"] = mean(lambda x: x["per_step"]["busy_us"])
    out["overlap_us"] = sum(out[f"{k}_us"] for k in KINDS) - out["busy_us"]
    out["period_us"] = mean(lambda x: x["per_step"]["period_us"])
    hosts = [x["host_step_us"]["median"] for x in ranks if x.get("host_step_us")]
    out["host_us"] = statistics.fmean(hosts) if hosts else None
    launches = [x["graph_launch_us"] for x in ranks if x.get("graph_launch_us")]
    out["launch"] = ((statistics.fmean(x["period"] for x in launches), statistics.fmean(x["busy"] for x in launches))
                     if launches else None)
    out["launch_recorded"] = any("graph_launch_us" in x for x in ranks)  # runs before this field have none
    replays = [x["graph_replay_us"] for x in ranks if x.get("graph_replay_us")]
    out["replay"] = ((statistics.fmean(x["span"] for x in replays), statistics.fmean(x["busy"] for x in replays))
                     if replays else None)
    out["replay_recorded"] = any("graph_replay_us" in x for x in ranks)
    return out


def _pair(per: list[dict], key: str, none: str) -> str:
    """Medians of a (first, second) field over servers, or why there is none."""
    pairs = [c[key] for c in per if c[key]]
    if pairs:
        return f"{statistics.median(a for a, _ in pairs):.0f} / {statistics.median(b for _, b in pairs):.0f}"
    return none if any(c[f"{key}_recorded"] for c in per) else "not recorded (run older than the field)"


def table(variants: list[str], by_variant: dict[str, list[dict]]) -> list[str]:
    head = ["Variant", "servers"] + [LABELS[k] for k in KINDS] + [
        "GPU busy us", "kernel us beyond busy", "step period us", "host us / step",
        "host period / busy us between graph launches", "GPU span / busy us per graph replay"]
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for v in variants:
        per = [c for c in (_server(r) for r in by_variant[v]) if c]
        if not per:
            rows.append(f"| {v} | 0 |" + " - |" * (len(head) - 2))
            continue
        med = lambda key: statistics.median(c[key] for c in per)  # noqa: E731
        cells = [v, str(len(per))] + [f"{med(k + '_n'):.1f} / {med(k + '_us'):.1f}" for k in KINDS]
        cells += [f"{med('busy_us'):.0f}", f"{med('overlap_us'):.1f}", f"{med('period_us'):.0f}"]
        hosts = [c["host_us"] for c in per if c["host_us"] is not None]
        cells.append(f"{statistics.median(hosts):.0f}" if hosts else "n/a (no per-step CPU annotation)")
        cells.append(_pair(per, "launch", "n/a (no graph launches)"))
        cells.append(_pair(per, "replay", "n/a (no replayed kernels)"))
        rows.append("| " + " | ".join(cells) + " |")
    return rows
