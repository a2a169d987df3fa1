"""How fresh servers' recorded logprobs differ: tie reorderings or real numbers (stdlib only).

    python3 benchmarks/logprob_diff_analysis.py benchmarks/results/real-engines/vllm-small/results.json.xz [more ...]

Reads serve_ab ``results.json`` files (or ``.json.xz``, through the runner's own ``State.load``); several files are pooled per model (run ids
get the plan folder's name), so classes can be matched across plans and machines. Per model: the
bitwise classes of all ok servers (warm-ups included) with what each record holds about its server
(start, machine, GPU time per decode step of the non-FA3 kernels, compile cache);
how often exact ties occur in the top-k lists; a matrix of differing positions between classes; then,
for every pair of classes that hold an ``off`` server, each prompt's top-k lists compared position by
position:

- ``same``: bitwise identical;
- ``tie``: the same multiset of logprob values under other ids (equal values reordered, or another
  id with an equal value entering the top-k at its boundary);
- ``numeric``: the values differ.

For numeric positions: the first one; max |diff| over ids in both lists per quarter of the sequence
(does it grow?); ``shift only``: every listed id moved by the same amount (only the log-sum-exp
moved, all listed logits held); the per-id diffs as the position's (low) median diff, i.e. that
id's logit held, or that +-2**-6 (one bf16 step of a logit in [2, 4)), or other. A pair is
``propagating`` when some prompt differs at more than half of the positions from its first numeric
one on, else ``isolated``.

Records with the census by kernel name (``per_step.by_name``, from 2026-12-06) also get, for every class
against the largest one, the kernels it runs that the largest class does not (or the other way round) and
those whose GPU time per step lies more than ``SLACK`` and ``MIN_US`` outside the largest class's range:
which kernel a class runs differently, and that kernel's launch configurations where they differ (records with
``launch``: block, registers, shared memory), which tell another Triton config under the same name; then those
kernels' GPU time per step on every server beside its class.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from integration.serve_ab.results import State  # noqa: E402

TOPS = ("prompt_top", "output_top")
SLACK, MIN_US = 0.03, 0.5


def classes(runs: list[dict]) -> list[list[dict]]:
    """Runs grouped by bitwise-identical logprobs, in the order the first of each ran."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(json.dumps(r["logprobs"]["prompts"], sort_keys=True), []).append(r)
    return list(groups.values())


def kind(x, y) -> str:
    if x == y:
        return "same"
    if x is None or y is None:
        return "numeric"
    return "tie" if sorted(v for _, v in x) == sorted(v for _, v in y) else "numeric"


def tie_stats(prompts: list[dict], section: str, k: int) -> tuple[int, int, int]:
    """(positions, positions whose top-k values hold a repeat, positions whose k-th value repeats)."""
    n = repeat = boundary = 0
    for p in prompts:
        for top in p[section]:
            if not top:
                continue
            vals = sorted((v for _, v in top), reverse=True)[:k]  # vLLM adds the prompt token's entry
            n += 1
            repeat += len(set(vals)) < len(vals)
            boundary += len(vals) == k and vals[-1] == vals[-2]
    return n, repeat, boundary


def rank0(run: dict) -> dict:
    """Rank 0's record of the profile window ({} without one)."""
    return ((run.get("profile") or {}).get("ranks") or [{}])[0]


def per_step(run: dict) -> dict:
    """The census per decode step of rank 0's profile window ({} without one)."""
    return rank0(run).get("per_step") or {}


def other_us(run: dict) -> str:
    """GPU us per decode step of the kernels the census calls 'other' (not FA3)."""
    other = per_step(run).get("gpu_us", {}).get("other")
    return "-" if other is None else f"{other:.1f}"


def by_name(run: dict) -> dict | None:
    """[count, GPU us] per decode step of each kernel name; None before the field."""
    return per_step(run).get("by_name")


def launch(run: dict) -> dict:
    """Launch configurations per kernel name of rank 0's profile window ({} before the field)."""
    return rank0(run).get("launch") or {}


def deviations(run: dict, reference: list[dict]) -> list[tuple[str, float, float, float, float]]:
    """(name, count, us, reference low, reference high) per step of each kernel ``run`` runs other than every
    ``reference`` server: present on one side only, or GPU time more than SLACK and MIN_US outside their range."""
    refs, mine = [t for t in map(by_name, reference) if t], by_name(run)
    if not mine or not refs:
        return []
    out = []
    for name in sorted(mine.keys() | {n for t in refs for n in t}):
        n, us = mine.get(name, (0.0, 0.0))
        ref = [t.get(name, (0.0, 0.0)) for t in refs]
        lo, hi = min(u for _, u in ref), max(u for _, u in ref)
        outside = min(abs(us - lo), abs(us - hi)) if not lo * (1 - SLACK) <= us <= hi * (1 + SLACK) else 0.0
        present = {c > 0 for c, _ in ref}  # run by every reference server, by none, or by some
        if present == {n == 0} or outside > MIN_US:
            out.append((name, n, us, lo, hi))
    return out


def kernel_outliers(group: list[dict], reference: list[dict]) -> list[str]:
    """The deviations of ``group``'s servers from ``reference``, with launch configs where those differ."""
    out = []
    for run in group:
        for name, n, us, lo, hi in deviations(run, reference):
            out.append(f"    {run['id']}: {name[:100]}: {n:.2f} per step, {us:.2f} us (reference {lo:.2f}-{hi:.2f} us)")
            theirs = sorted({c for r in reference for c in launch(r).get(name, [])})
            if launch(run).get(name, []) != theirs:  # the same name compiled to another config
                out.append(f"      launch {launch(run).get(name, [])}; reference {theirs}")
    return out


def kernel_table(runs: list[dict], label: dict, names: list[str]) -> list[str]:
    """GPU us per step of ``names`` on every server beside its class: which times go with which class."""
    out = [f"    K{i + 1} = {name[:110]}" for i, name in enumerate(names)]
    out.append("    class  server" + " " * 47 + "".join(f"{f'K{i + 1}':>10s}" for i in range(len(names))))
    for r in runs:
        times = by_name(r) or {}
        out.append(f"    {label[r['id']]:5s}  {r['id']:52s} " +
                   "".join(f"{times[n][1]:10.1f}" if n in times else f"{'-':>10s}" for n in names))
    return out


def compare_top(xs: list, ys: list) -> dict:
    counts, first, quarters, resid, shift_only = Counter(), None, [0.0] * 4, Counter(), 0
    for pos, (x, y) in enumerate(zip(xs, ys)):
        c = kind(x, y)
        counts[c] += 1
        if c != "numeric" or x is None or y is None:
            continue
        first = pos if first is None else first
        nx, ny = dict(x), dict(y)
        diffs = [ny[i] - nx[i] for i in nx.keys() & ny.keys()]
        if not diffs:
            continue
        q = pos * 4 // len(xs)
        quarters[q] = max(quarters[q], max(abs(d) for d in diffs))
        shift_only += len(set(diffs)) == 1 and nx.keys() == ny.keys()
        shift = statistics.median_low(diffs)  # one id's diff: the log-sum-exp shift if its logit held
        resid.update("held" if d == shift else "step" if abs(abs(d - shift) - 2 ** -6) < 1e-4 else "other"
                     for d in diffs)
    return {"counts": counts, "first": first, "quarters": quarters, "resid": resid, "shift_only": shift_only,
            "propagating": first is not None and 2 * counts["numeric"] > len(xs) - first}


def differing(a: dict, b: dict) -> str:
    """Differing positions per prompt (top-k lists of prompt and output together)."""
    return "/".join(str(sum(u != v for s in TOPS for u, v in zip(x[s], y[s])))
                    for x, y in zip(a["prompts"], b["prompts"]))


def describe_pair(a: dict, b: dict, lengths: list[int]) -> list[str]:
    out, resid, propagating = [], Counter(), False
    for p, (x, y) in enumerate(zip(a["prompts"], b["prompts"])):
        ids = [i for i, (u, v) in enumerate(zip(x["output_ids"], y["output_ids"])) if u != v]
        gen = "identical" if not ids else f"differ from step {ids[0]} ({len(ids)} of {len(x['output_ids'])})"
        out.append(f"    prompt {p} ({lengths[p]} tokens): generated ids {gen}")
        for s in TOPS:
            c = compare_top(x[s], y[s])
            resid += c["resid"]
            propagating |= c["propagating"]
            n, q = sum(c["counts"].values()), " ".join(f"{v:.2g}" for v in c["quarters"])
            out.append(f"      {s:10s} same {c['counts']['same']:4d}  tie {c['counts']['tie']:3d}  numeric "
                       f"{c['counts']['numeric']:4d} of {n:4d} (shift only {c['shift_only']:4d}); first numeric at "
                       f"{c['first']}; max|diff| per quarter {q}")
    total = sum(resid.values()) or 1
    out.append(f"    {'propagating' if propagating else 'isolated'}; ids in both lists at numeric positions: "
               f"logit held {resid['held'] / total:.0%}, one bf16 step (2**-6) {resid['step'] / total:.0%}, "
               f"other {resid['other'] / total:.0%}")
    return out


def report(runs: list[dict]) -> list[str]:
    out = []
    for model in sorted({r["model"] for r in runs}):
        mine = [r for r in runs if r["model"] == model]
        groups = classes(mine)
        label = {r["id"]: chr(ord("A") + i) for i, g in enumerate(groups) for r in g}
        out.append(f"== {model}: {len(mine)} servers, {len(groups)} bitwise classes")
        out.append("  class  server                                               started                   start s  "
                   "machine   other us/step  compile")
        for r in mine:
            machine = (r.get("machine") or "-")[:8]
            out.append(f"  {label[r['id']]:5s}  {r['id']:52s} {r.get('started')}  {r.get('server_start_s'):7}  "
                       f"{machine:8s}  {other_us(r):>13s}  {(r.get('server') or {}).get('compile')}")
        lp = mine[0]["logprobs"]
        for s, k in (("prompt_top", lp["prompt_top"]), ("output_top", lp["top"])):
            n, rep, bnd = tie_stats(lp["prompts"], s, k)
            out.append(f"  ties in {mine[0]['id']} {s} (top {k}): {rep} of {n} positions hold a repeated value, "
                       f"{bnd} a repeated k-th value")
        out.append("  differing top-k positions per prompt (" + "/".join(map(str, lp["prompt_lengths"])) + " tokens):")
        for g in groups:
            out.append(f"    {label[g[0]['id']]}  " + " ".join(f"{differing(g[0]['logprobs'], h[0]['logprobs']):>18s}"
                                                         for h in groups))
        largest = max(groups, key=len)
        for g in (g for g in groups if g is not largest):
            out.append(f"  kernels class {label[g[0]['id']]} runs other than class {label[largest[0]['id']]}:")
            out += kernel_outliers(g, largest) or ["    none (or no census by kernel name in these records)"]
        names = sorted({d[0] for g in groups if g is not largest for r in g for d in deviations(r, largest)})
        if names:
            out.append("  GPU us per decode step of those kernels on every server:")
            out += kernel_table(mine, label, names)
        offs = [next(r for r in g if r["variant"] == "off") for g in groups if any(r["variant"] == "off" for r in g)]
        for i, a in enumerate(offs):
            for b in offs[i + 1:]:
                out.append(f"  class {label[a['id']]} vs {label[b['id']]} ({a['id']} vs {b['id']}):")
                out += describe_pair(a["logprobs"], b["logprobs"], lp["prompt_lengths"])
    return out


def main(paths: list[str]) -> None:
    runs = []
    for path in paths:
        state, plan = State.load(Path(path)), Path(path).resolve().parent.name
        for r in state.runs.values():
            if r.get("status") == "ok" and r.get("logprobs"):
                runs.append(dict(r, id=f"{plan}:{r['id']}" if len(paths) > 1 else r["id"]))
    print("\n".join(report(runs)))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    main(sys.argv[1:])
