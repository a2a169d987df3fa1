"""The plugin's own lines from a server log, from every process, read tolerantly.

Kept raw (the summary line's wording changes), then read with loose patterns: the number after
"prepare launches avoided", the ``reason=N`` items after "passed through:", any graph-replay count.
A process is told apart by the engine's log prefix (vLLM ``(Worker_TP1 pid=7)``, SGLang ``TP1``).
The latest summary of each process holds its totals.
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
_AVOIDED = re.compile(r"prepare launches avoided\D{0,3}(\d+)")
_CALLS = re.compile(r"(\d+) FA3 calls")
_PASSED = re.compile(r"passed through:\s*([^;]*)")
_REASON = re.compile(r"([\w./-]+)\s*[=:]\s*(\d+)")
_REPLAYS = re.compile(r"(?:graph[ _-]?)?replays?\D{0,3}(\d+)|(\d+) (?:graph )?replays?", re.IGNORECASE)


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
    avoided = _AVOIDED.search(message)
    if avoided is None:
        return None
    calls = _CALLS.search(message)
    passed = _PASSED.search(message)
    reasons = {r: int(n) for r, n in _REASON.findall(passed.group(1))} if passed else {}
    replays = [int(a or b) for a, b in _REPLAYS.findall(message)]
    return {"launches_avoided": int(avoided.group(1)), "calls": int(calls.group(1)) if calls else None,
            "passthrough": reasons, "replays": sum(replays) if replays else None}


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
        replays = [s["replays"] for s in latest.values() if s["replays"] is not None]
        totals = {"processes": len(latest), "launches_avoided": sum(s["launches_avoided"] for s in latest.values()),
                  "passthrough": dict(passthrough), "replays": sum(replays) if replays else None}
    return {"activation": dict(activation), "summary": totals}
