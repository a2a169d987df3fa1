"""The report per model: speed as median (IQR) with a 95% interval of each delta vs ``off``, exactness
by logprobs against every ``off`` server, the kernel census per decode step, and what each server's
log says about its compile cache, backend and graphs.

Warm-up servers (repeat 0, the cold compile) are listed but neither compared nor in any statistic.
A delta reads "no difference within ±x%" only when its interval says so (``stats.verdict``).
"""

from __future__ import annotations

import statistics
from collections import Counter

from . import census, exactness, serverlog, stats as st
from .plan import HEADLINE_RUNS, Plan
from .results import METRICS, State
from .variants import DESCRIPTIONS, OFF

HIGHER_IS_BETTER = {"output_throughput": True}


def value_cell(values: list[float]) -> str:
    if not values:
        return "-"
    s = st.median_iqr(values)
    return f"{s['median']:.2f}" if s["n"] == 1 else f"{s['median']:.2f} ({s['q1']:.2f}-{s['q3']:.2f})"


def delta_cell(key: str, off: list[float], other: list[float]) -> str:
    if not off or not other or min(off + other) <= 0:
        return "-"
    return st.verdict(st.shift(off, other), HIGHER_IS_BETTER.get(key, False))


def _ok(state: State, model: str) -> dict[str, list[dict]]:
    """Ok records of ``model`` by variant, in plan order."""
    out: dict[str, list[dict]] = {v: [] for v in state.plan.variants}
    for run in state.plan.runs():
        rec = state.runs.get(run.id)
        if run.model == model and run.repeat > 0 and rec and rec["status"] == "ok":
            out[run.variant].append(rec)
    return out


def _warmups(plan: Plan, recs: list[dict]) -> str:
    """The warm-up sentence; servers of repeat 0 beyond the plan's are a resumed plan's later machines."""
    if not plan.warmup:
        return "No warm-up server: the first server's cold compile is in the numbers."
    ids = {run.id for run in plan.runs()}
    later = sum(rec.get("repeat") == 0 and rec["id"] not in ids for rec in recs)
    again = f", and {later} more first on the later machine(s) this resumed plan ran on" if later else ""
    return (f"{plan.warmup} warm-up server(s) per model first{again} (cold compile; not compared, not in the "
            "statistics).")


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
    if plan.server_env:
        lines += ["", "Every server of every variant also ran with "
                  + " ".join(f"`{k}={v}`" for k, v in plan.server_env.items()) + "."]
    lines += ["", _warmups(plan, recs), "",
              "Values: median (IQR) over a variant's ok servers. Delta vs `off`: Hodges-Lehmann shift of the log "
              "ratio with its exact Mann-Whitney 95% interval, in %; \"no difference within ±x%\" only when the "
              f"interval holds 0. Fewer than {HEADLINE_RUNS} ok runs = exploratory."]
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
            vals = {v: [r["bench"][w.name][key] for r in recs] for v, recs in by_variant.items()}
            cells = [w.label(), label, value_cell(vals[OFF])]
            for v in others:
                cells += [value_cell(vals[v]), delta_cell(key, vals[OFF], vals[v])]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def _prepare_values(recs: list[dict]) -> tuple[list[float], list[float]]:
    """Prepare launches per decode step and the steps seen, per server (ranks averaged)."""
    values, steps = [], []
    for r in recs:
        ranks = [x for x in r["profile"]["ranks"] if x["prepare_per_step"] is not None]
        if ranks:
            values.append(statistics.fmean(x["prepare_per_step"] for x in ranks))
            steps.append(min(x["steps"] for x in ranks))
    return values, steps


def _prepare_cell(recs: list[dict]) -> str:
    values, steps = _prepare_values(recs)
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
    rows = ["| Variant | Prepare launches / decode step | Plugin lines "
            "| Launches avoided per run | Passed through (all runs) | Graph replays per run |",
            "|---|---|---|---|---|---|"]
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
            v, _prepare_cell(recs), " / ".join(activations) or "-",
            _range_cell([s["launches_avoided"] if s else None for s in summaries]), passed_cell,
            _range_cell([s["replays"] if s else None for s in summaries])]) + " |")
    return rows


def headline(state: State) -> list[dict]:
    """One row per model and plugin-on variant for the README: servers per variant, prepare launches per
    decode step (medians), the first workload's TPOT delta and the logprob verdict."""
    plan, rows = state.plan, []
    for model in plan.models:
        by_variant = _ok(state, model)
        judged = exactness.judge(plan.variants, by_variant)
        for v in (v for v in plan.variants if v != OFF):
            prepare = [_prepare_values(by_variant[x])[0] for x in (OFF, v)]
            tpot = [[r["bench"][plan.workloads[0].name]["mean_tpot_ms"] for r in by_variant[x]] for x in (OFF, v)]
            kind, identical = judged[v].kind, judged[v].identical
            rows.append({"model": model, "variant": v, "n": (len(by_variant[OFF]), len(by_variant[v])),
                         "prepare": tuple(statistics.median(x) if x else None for x in prepare),
                         "tpot": delta_cell("mean_tpot_ms", *tpot), "workload": plan.workloads[0].label(),
                         "logprobs": f"{kind}: {identical}" if kind else identical,
                         "control": judged[OFF].identical})
    return rows


def report(state: State) -> str:
    plan = state.plan
    lines = _header(state)
    for model in plan.models:
        by_variant = _ok(state, model)
        recs = [r for v in plan.variants for r in by_variant[v]]
        lines += ["", f"## {model}, TP{plan.tp}", ""]
        lines += _metric_table(plan, by_variant)
        rows, failures = exactness.verdict(plan.variants, by_variant)
        lines += ["", "Exactness (prompt and top-k output logprobs of fixed prompts, temperature 0, each server "
                  "against every `off` server; off-vs-off is the control):", ""] + rows
        lines += [""] + failures if failures else []
        lines += ["", "Kernel census per decode step (profile window; median over a variant's servers; count / GPU "
                  "us; host = the engine's own per-step annotation):", ""] + census.table(plan.variants, by_variant)
        lines += ["", "Checks (prepare launches from the profiler window; plugin lines and the latest summary of "
                  "every process, summed):", ""]
        lines += _checks_table(plan, by_variant)
        lines += ["", "Servers (what besides our calls can differ: compile cache, backend, graphs; from each "
                  "server log):", ""] + serverlog.table(state, model)
        if recs:
            starts = [r["server_start_s"] for r in recs]
            lines += ["", f"Server start {min(starts):.0f}-{max(starts):.0f} s. Server command ({recs[0]['id']}; "
                      f"variants differ only in the environment above): `{recs[0]['commands']['server']}`"]
    failed = [(rid, r["error"]) for rid, r in state.runs.items() if r["status"] == "failed"]
    if failed:
        lines += ["", "Failed runs:"] + [f"- {rid}: {err}" for rid, err in failed]
    return "\n".join(lines) + "\n"
