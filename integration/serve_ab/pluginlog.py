"""The plugin's own lines from a server log, from every process.

Kept raw, then read: activation lines by kind, and the summary line of ``stats.summary_line()``
(total prepare launches avoided; those in CUDA-graph replays with the replay and graph counts;
those in intercepted calls; pass-throughs by reason). A process is told apart by the engine's log
prefix (vLLM ``(Worker_TP1 pid=7)``, SGLang ``TP1``). The latest summary of each process holds its
totals. ``tests/integration/test_serve_ab_pluginlog.py`` reads lines the real ``summary_line()``
writes, so a change of the format fails there.
"""

from __future__ import annotations

import re
from collections import Counter

MARKERS = ("attn-sched:", "attn-sched-seed-baseline:")
MAX_LINES = 1000

_ACTIVATION = {"active": "attn-sched: active for", "inactive": "attn-sched: inactive for",
               "disabled": "attn-sched: disabled by", "seed-baseline": "attn-sched-seed-baseline:"}
_SOURCE = (re.compile(r"\(([A-Za-z_][\w-]*(?: pid=\d+)?)\)"), re.compile(r"\b(TP\s?\d+)\b"),
           re.compile(r"\b(pid[= ]\d+)\b"))
_SUMMARY = re.compile(r"prepare launches avoided (\d+): (\d+) in (\d+) CUDA-graph replays \((\d+) graphs captured\), "
                      r"(\d+) in (\d+) intercepted FA3 calls")
_PASSED = re.compile(r"passed through:\s*([^;]*)")
_REASON = re.compile(r"([\w./-]+)=(\d+)")
# summed over processes in ``digest``
_COUNTS = ("launches_avoided", "graph_launches_avoided", "replays", "graphs", "calls")


def extract(log_text: str) -> list[str]:
    """Every log line carrying one of the markers, in order (at most MAX_LINES, the latest kept)."""
    lines = [line.rstrip() for line in log_text.splitlines() if any(m in line for m in MARKERS)]
    return lines[-MAX_LINES:]


def _message(line: str) -> tuple[str, str]:
    at = min(i for i in (line.find(m) for m in MARKERS) if i >= 0)
    return line[:at], line[at:]


def source(line: str) -> str:
    prefix, _ = _message(line)
    for pattern in _SOURCE:
        m = pattern.search(prefix)
        if m:
            return m.group(1)
    return "main"


def parse_summary(message: str) -> dict | None:
    """The counters of one summary line; None if the line is no summary."""
    m = _SUMMARY.search(message)
    if m is None:
        return None
    total, graph, replays, graphs, _intercepted, calls = (int(g) for g in m.groups())
    passed = _PASSED.search(message)
    reasons = {r: int(n) for r, n in _REASON.findall(passed.group(1))} if passed else {}
    return {"launches_avoided": total, "graph_launches_avoided": graph, "replays": replays, "graphs": graphs,
            "calls": calls, "passthrough": reasons}


def digest(lines: list[str]) -> dict:
    """Activation lines by kind, and the latest summary of every process added up."""
    activation: Counter = Counter()
    latest: dict[str, dict] = {}
    for line in lines:
        _, message = _message(line)
        for kind, start in _ACTIVATION.items():
            if message.startswith(start):
                activation[kind] += 1
        summary = parse_summary(message)
        if summary is not None:
            latest[source(line)] = summary
    totals = None
    if latest:
        passthrough: Counter = Counter()
        for s in latest.values():
            passthrough.update(s["passthrough"])
        totals = {"processes": len(latest), **{n: sum(s[n] for s in latest.values()) for n in _COUNTS},
                  "passthrough": dict(passthrough)}
    return {"activation": dict(activation), "summary": totals}
