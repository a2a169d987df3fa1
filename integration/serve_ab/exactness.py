"""The exactness verdict of one model: every server's logprobs against every ``off`` server's.

Off-vs-off pairs are the control: when they all agree, the engine is bitwise reproducible across
fresh servers, and a plugin-on server that differs from them is a FAILURE. When the controls
themselves differ (vLLM 0.26's fresh servers fall into bitwise classes with the plugin off), an on
server bitwise identical to an off server is consistent (the plugin would have to reproduce another
server's numbers exactly); on servers equal to no off server are a FAILURE when they reproduce an
off server less often than the off servers reproduce each other (one-sided Fisher exact test,
p < 0.05), else there is no verdict: the engine's own spread hides any the plugin could add. With
fewer than 2 off servers there is no verdict either, and the report says so.
Records of an earlier runner carry greedy ids only; they are compared by ids, and say so.
"""

from __future__ import annotations

from typing import NamedTuple

from . import greedy, logprobs
from .stats import fisher_fewer
from .variants import OFF

ALPHA = 0.05


def _pairs(recs: list[dict], refs: list[dict]) -> list[tuple[str, str, dict | None]]:
    return [(r["id"], ref["id"], logprobs.compare(ref["logprobs"], r["logprobs"]))
            for r in recs for ref in refs if ref["id"] != r["id"]]


def _identical(pairs: list) -> str:
    if not pairs:
        return "- (no pair)"
    return f"{sum(1 for p in pairs if not p[2])} of {len(pairs)} pairs identical"


def _cell(pairs: list) -> str:
    bad = [(a, b, d) for a, b, d in pairs if d]
    text = _identical(pairs)
    if bad:
        a, b, d = max(bad, key=lambda x: x[2]["max_abs_diff"] or 0)
        text += (f"; worst {a} vs {b}: first at {d['first']}, differing positions {d['positions']}, "
                 f"max abs diff {d['max_abs_diff']:.3g}")
    return text


def _greedy_cell(reference: dict | None, recs: list[dict]) -> str:
    if not recs or reference is None:
        return "-"
    diffs = [(r["id"], greedy.first_difference(reference["greedy"]["output_ids"], r["greedy"]["output_ids"]))
             for r in recs]
    bad = [(i, d) for i, d in diffs if d]
    if not bad:
        return f"greedy ids only (older record): identical ({len(recs)} runs)"
    return f"greedy ids only (older record): NO in {len(bad)} of {len(recs)}: {bad[0][0]}: {bad[0][1]}"


def _classes(offs: list[dict], controls: list) -> int:
    """How many bitwise classes the off servers form (identical = same class)."""
    parent = {r["id"]: r["id"] for r in offs}

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i
    for a, b, d in controls:
        if not d:
            parent[root(a)] = root(b)
    return len({root(i) for i in parent})


def _classes_verdict(v: str, recs: list[dict], offs: list[dict], pairs: list, controls: list) -> tuple[str, str]:
    """The verdict on ``v`` (kind, detail) when the off controls differ among themselves."""
    matched = {a for a, _, d in pairs if not d}
    alone = [r["id"] for r in recs if r["id"] not in matched]
    k = _classes(offs, controls)
    bad = sum(1 for p in pairs if p[2])
    if not alone:
        return "consistent", (f"{v}: each of its {len(recs)} servers is bitwise identical to one of the "
                              f"{len(offs)} off servers, which form {k} bitwise classes among themselves (the "
                              f"engine's own difference across fresh servers): {bad} of {len(pairs)} pairs differ "
                              "only as off servers differ from each other")
    reproduced = {i for a, b, d in controls if not d for i in (a, b)}
    on_rate, off_rate = (len(recs) - len(alone), len(recs)), (len(reproduced), len(offs))
    p = fisher_fewer(on_rate[0], on_rate[1], off_rate[0], off_rate[1])
    rates = (f"{on_rate[0]} of {on_rate[1]} {v} servers equal an off server, {off_rate[0]} of {off_rate[1]} off "
             f"servers equal another (one-sided Fisher p = {p:.3g})")
    if p < ALPHA:
        return "FAILURE", f"{v}: {', '.join(alone)} bitwise equal to none of the {len(offs)} off servers: {rates}"
    return "no verdict", (f"{v}: {', '.join(alone)} bitwise equal to none of the {len(offs)} off servers, which "
                          f"form {k} classes among themselves; {rates}: the engine's own difference across fresh "
                          "servers is as large")


def _ids_only(variants: list[str], by_variant: dict[str, list[dict]]) -> bool:
    """Records of an earlier runner: greedy ids, no logprobs."""
    return any(r.get("logprobs") is None for v in variants for r in by_variant[v])


class Judgement(NamedTuple):
    cell: str  # the table's text: pairs identical, the worst pair
    identical: str  # "k of n pairs identical" (greedy records: the same as ``cell``)
    kind: str | None = None  # the verdict: FAILURE, consistent, no verdict, unexplained; None when there is none
    detail: str = ""  # the verdict line after its kind

    @property
    def line(self) -> str | None:
        """The verdict line, led by its kind (which the README headline shows alone)."""
        return f"{self.kind}: {self.detail}" if self.kind else None


def judge(variants: list[str], by_variant: dict[str, list[dict]]) -> dict[str, Judgement]:
    """Each variant's logprobs against every off server (the off variant: the off-vs-off controls)."""
    offs = by_variant.get(OFF, [])
    if _ids_only(variants, by_variant):
        pool = offs or [r for v in variants for r in by_variant[v]]
        cells = {v: _greedy_cell(pool[0] if pool else None, by_variant[v]) for v in variants}
        return {v: Judgement(c, c) for v, c in cells.items()}
    controls = _pairs(offs, offs)
    controls = [p for p in controls if p[0] > p[1]]  # each unordered pair once
    controls_agree = bool(controls) and not any(d for _, _, d in controls)
    out = {}
    for v in variants:
        pairs = controls if v == OFF else _pairs(by_variant[v], offs)
        bad = [p for p in pairs if p[2]]
        kind, detail = None, ""
        if v != OFF and bad:
            if controls_agree:
                kind, detail = "FAILURE", (f"{v}: {len(bad)} of {len(pairs)} pairs differ while the "
                                           f"{len(controls)} off-vs-off pairs are identical (first: {bad[0][0]} vs "
                                           f"{bad[0][1]} at {bad[0][2]['first']})")
            elif len(offs) < 2:
                kind, detail = "unexplained", (f"{v} differs from off in {len(bad)} of {len(pairs)} pairs, but "
                                               "there are fewer than 2 off servers: no verdict on the plugin")
            else:
                kind, detail = _classes_verdict(v, by_variant[v], offs, pairs, controls)
        out[v] = Judgement(_cell(pairs), _identical(pairs), kind, detail)
    return out


def verdict(variants: list[str], by_variant: dict[str, list[dict]]) -> tuple[list[str], list[str]]:
    """Table rows (variant | vs every off server) and the verdict lines (FAILURE, consistent, no verdict, unexplained)."""
    judged = judge(variants, by_variant)
    rows = ["| Variant | Logprobs vs every `off` server (bitwise) |", "|---|---|"]
    control = "" if _ids_only(variants, by_variant) else " (control)"
    rows += [f"| {v}{control if v == OFF else ''} | {judged[v].cell} |" for v in variants]
    return rows, [j.line for j in judged.values() if j.line]
