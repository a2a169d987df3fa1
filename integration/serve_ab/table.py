"""The report: SGLang PR #20943's table per model (mean, spread, delta vs ``off``) and a checks table.

A value is the mean over a variant's ok runs with its min-max range. A delta is "noise" when the
two min-max ranges overlap: the variants are not told apart by these runs. With one run on either
side there is no range, so the delta carries "(1 run)" instead of a noise call.
"""

from __future__ import annotations

import statistics
from collections import Counter

from . import greedy
from .plan import HEADLINE_RUNS
from .results import METRICS, State
from .variants import DESCRIPTIONS, OFF


def stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "lo": min(values), "hi": max(values), "n": len(values)}


def noise(ref: dict, other: dict) -> bool | None:
    """Whether the ranges overlap; None when either side has a single run."""
    if ref["n"] < 2 or other["n"] < 2:
        return None
    return ref["lo"] <= other["hi"] and other["lo"] <= ref["hi"]


def value_cell(s: dict | None) -> str:
    if s is None:
        return "-"
    return f"{s['mean']:.2f}" if s["n"] == 1 else f"{s['mean']:.2f} ({s['lo']:.2f}-{s['hi']:.2f})"


def delta_cell(ref: dict | None, other: dict | None) -> str:
    if ref is None or other is None or ref["mean"] == 0:
        return "-"
    text = f"{(other['mean'] - ref['mean']) / ref['mean'] * 100:+.1f}%"
    call = noise(ref, other)
    return text + (" (1 run)" if call is None else " noise" if call else "")


def _ok(state: State, model: str) -> dict[str, list[dict]]:
    """Ok records of ``model`` by variant, in plan order."""
    out: dict[str, list[dict]] = {v: [] for v in state.plan.variants}
    for run in state.plan.runs():
        rec = state.runs.get(run.id)
        if run.model == model and rec and rec["status"] == "ok":
            out[run.variant].append(rec)
    return out


def _header(state: State) -> list[str]:
    plan = state.plan
    runs = plan.runs()
    ok = sum(1 for r in runs if state.runs.get(r.id, {}).get("status") == "ok")
    failed = sum(1 for r in runs if state.runs.get(r.id, {}).get("status") == "failed")
    recs = list(state.runs.values())
    versions = sorted({str(r.get("versions", {}).get(plan.engine)) for r in recs}) or ["?"]
    cards = sorted({", ".join(f"{n}x {c}" for c, n in Counter(r.get("cards", [])).items()) for r in recs}) or ["?"]
    lines = [f"# Serving A/B: {plan.engine} {' / '.join(versions)}, TP{plan.tp}, on {' / '.join(cards)}", "",
             f"{ok} of {len(runs)} runs ok, {failed} failed, {len(runs) - ok - failed} not run; "
             f"{plan.repeats} fresh servers per variant and model, variants alternating.", ""]
    lines += [f"- `{v}`: {DESCRIPTIONS[plan.engine][v]}" for v in plan.variants]
    lines += ["", "Values: mean (min-max) over a variant's ok runs. Delta: mean vs `off`; \"noise\" = the two "
              "min-max ranges overlap; \"(1 run)\" = no range, no noise call. Fewer than "
              f"{HEADLINE_RUNS} ok runs = exploratory."]
    short = [f"{w.name}: {w.shortened()}" for w in plan.workloads if w.shortened()]
    if short:
        lines += ["", "Shortened from the seed PR's workloads (time limits on the GPU machine): " + "; ".join(short)
                  + "."]
    return lines


def _metric_table(plan, by_variant: dict[str, list[dict]]) -> list[str]:
    others = [v for v in plan.variants if v != OFF]
    head = ["Workload", "Metric"]
    for v in plan.variants:
        n = len(by_variant[v])
        head.append(f"{v} (n={n}{', exploratory' if n < HEADLINE_RUNS else ''})")
        if v != OFF:
            head.append(f"delta {v}")
    rows = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for w in plan.workloads:
        for key, label in METRICS:
            s = {v: stats([r["bench"][w.name][key] for r in recs]) if recs else None
                 for v, recs in by_variant.items()}
            cells = [w.label(), label, value_cell(s[OFF])]
            for v in others:
                cells += [value_cell(s[v]), delta_cell(s[OFF], s[v])]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def _greedy_cell(reference: dict | None, recs: list[dict]) -> str:
    if not recs or reference is None:
        return "-"
    diffs = [(r["id"], greedy.first_difference(reference["greedy"]["output_ids"], r["greedy"]["output_ids"]))
             for r in recs]
    bad = [(i, d) for i, d in diffs if d]
    if not bad:
        return f"yes ({len(recs)} runs)"
    return f"NO in {len(bad)} of {len(recs)}: {bad[0][0]}: {bad[0][1]}"


def _prepare_cell(recs: list[dict]) -> str:
    values, steps = [], []
    for r in recs:
        ranks = [x for x in r["profile"]["ranks"] if x["prepare_per_step"] is not None]
        if ranks:
            values.append(statistics.fmean(x["prepare_per_step"] for x in ranks))
            steps.append(min(x["steps"] for x in ranks))
    if not values:
        return "n/a (no FA3 kernels in the traces)" if recs else "-"
    lo, hi = min(values), max(values)
    spread = f"{lo:.2f}" if hi - lo < 0.005 else f"{lo:.2f}-{hi:.2f}"
    return f"{spread} (>= {min(steps):.0f} steps)"


def _range_cell(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _checks_table(plan, by_variant: dict[str, list[dict]]) -> list[str]:
    pool = by_variant[OFF] or [r for v in plan.variants for r in by_variant[v]]
    reference = pool[0] if pool else None
    rows = ["| Variant | Greedy ids identical | Prepare launches / decode step | Plugin lines "
            "| Launches avoided per run | Passed through (all runs) | Graph replays per run |",
            "|---|---|---|---|---|---|---|"]
    for v in plan.variants:
        recs = by_variant[v]
        activations = sorted({", ".join(f"{k} x{n}" for k, n in sorted(r["plugin"]["activation"].items())) or "none"
                              for r in recs})
        summaries = [r["plugin"]["summary"] for r in recs]
        passed: Counter = Counter()
        for s in summaries:
            passed.update((s or {}).get("passthrough", {}))
        passed_cell = ", ".join(f"{k}={n}" for k, n in sorted(passed.items())) or ("none" if any(summaries) else "-")
        rows.append("| " + " | ".join([
            v, _greedy_cell(reference, recs), _prepare_cell(recs), " / ".join(activations) or "-",
            _range_cell([s["launches_avoided"] if s else None for s in summaries]), passed_cell,
            _range_cell([s["replays"] if s else None for s in summaries])]) + " |")
    return rows


def report(state: State) -> str:
    plan = state.plan
    lines = _header(state)
    for model in plan.models:
        by_variant = _ok(state, model)
        recs = [r for v in plan.variants for r in by_variant[v]]
        lines += ["", f"## {model}, TP{plan.tp}", ""]
        lines += _metric_table(plan, by_variant)
        lines += ["", "Checks (greedy ids vs the first ok `off` run; prepare launches from the profiler window; "
                  "plugin lines and the latest summary of every process, summed):", ""]
        lines += _checks_table(plan, by_variant)
        if recs:
            starts = [r["server_start_s"] for r in recs]
            lines += ["", f"Server start {min(starts):.0f}-{max(starts):.0f} s. Server command ({recs[0]['id']}; "
                      f"variants differ only in the environment above): `{recs[0]['commands']['server']}`"]
    failed = [(rid, r["error"]) for rid, r in state.runs.items() if r["status"] == "failed"]
    if failed:
        lines += ["", "Failed runs:"] + [f"- {rid}: {err}" for rid, err in failed]
    return "\n".join(lines) + "\n"
