"""Per-process statistics: an observer plugin on the step-end hook, readable from Python.

Counters are folded in at each step end (keeping hooks off the per-call path); ``snapshot()``
adds the calling thread's unfinished step. A summary is logged periodically and at exit.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import Counter

from . import runtime, switches
from .hookspecs import hookimpl

log = logging.getLogger("attn_sched_plugin")


_FIELDS = ("calls", "injected", "computed", "verify_mismatches")


def _fold(totals: Counter, passthrough: Counter, tally) -> None:
    for name in _FIELDS:
        totals[name] += getattr(tally, name)
    passthrough.update(tally.passthrough)


class StatsObserver:
    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self._totals: Counter = Counter()
        self._passthrough: Counter = Counter()
        self._last_summary = time.monotonic()

    @hookimpl
    def attn_sched_step_end(self, tally) -> None:
        with self._lock:
            self._totals["steps"] += 1
            _fold(self._totals, self._passthrough, tally)
        interval = switches.current().summary_interval_s
        if interval > 0 and time.monotonic() - self._last_summary >= interval:  # 0: only the one at exit
            self._last_summary = time.monotonic()
            log.info("%s", summary_line())

    def snapshot(self) -> dict:
        with self._lock:
            totals, passthrough = Counter(self._totals), Counter(self._passthrough)
        open_tally = runtime.open_tally()
        if open_tally is not None and not open_tally.empty():
            _fold(totals, passthrough, open_tally)
        return {
            "steps": totals["steps"],
            **{name: totals[name] for name in _FIELDS},
            "launches_avoided": totals["injected"] - totals["computed"],
            "passthrough": dict(passthrough),
            "engine": _engine_counters(),
        }


def _engine_counters() -> dict:
    """What the adapters count about their engines (``attn_sched_engine_counters``)."""
    from .plugins import manager

    merged: dict = {}
    for counters in manager().hook.attn_sched_engine_counters():
        for engine, values in counters.items():
            merged.setdefault(engine, {}).update(values)
    return merged


OBSERVER = StatsObserver()


def snapshot() -> dict:
    """Counters of this process: calls seen, metadata injected and computed, launches avoided,
    pass-throughs by reason."""
    return OBSERVER.snapshot()


def summary_line() -> str:
    s = snapshot()
    reasons = ", ".join(f"{r}={n}" for r, n in sorted(s["passthrough"].items())) or "none"
    engine = "".join(f"; {e}: " + ", ".join(f"{k}={n}" for k, n in sorted(c.items())) for e, c in s["engine"].items())
    return (
        f"attn-sched: {s['calls']} FA3 calls in {s['steps']} steps; metadata computed {s['computed']}, "
        f"injected {s['injected']}, prepare launches avoided {s['launches_avoided']}; passed through: {reasons}"
        f"{engine}"
    )


@atexit.register
def _at_exit() -> None:
    if snapshot()["calls"]:
        log.info("%s", summary_line())
