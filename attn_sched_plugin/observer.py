"""``StatsObserver``: the per-process statistics, an observer on the step-end hook.

Two sources: the calls that went through the FA3 wrapper (folded in at each step end, keeping
hooks off the per-call path; ``snapshot()`` adds every thread's unfinished step), and the
CUDA-graph replays counted by ``graphs.GraphCounts``, where nearly all the work happens. A summary
is logged every ``ATTN_SCHED_SUMMARY_INTERVAL`` seconds (checked at step ends and every
``graphs.SUMMARY_EVERY`` replays of a graph) and at exit. Reading the statistics never raises: a
third-party counters hook that fails is logged once and left out. ``process.Process`` registers it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from . import once, switches
from .hooks import failed
from .hookspecs import hookimpl

log = logging.getLogger("attn_sched_plugin")

_FIELDS = ("calls", "injected", "computed", "verify_mismatches")


def _fold(totals: Counter, passthrough: Counter, tally) -> None:
    for name in _FIELDS:
        totals[name] += getattr(tally, name)
    passthrough.update(dict(tally.passthrough))  # a copy: another thread may be adding to it


class StatsObserver:
    def __init__(self, steps, graphs, hooks):
        self._steps, self._graphs, self._hooks = steps, graphs, hooks
        self._lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._totals: Counter = Counter()
        self._passthrough: Counter = Counter()
        self._last_summary = time.monotonic()

    @hookimpl
    def attn_sched_step_end(self, tally) -> None:
        with self._lock:
            self._totals["steps"] += 1
            _fold(self._totals, self._passthrough, tally)
        self.tick()

    def tick(self) -> None:
        """Log the summary if the interval has passed (0: only at exit); once, whatever the threads."""
        interval = switches.current().summary_interval_s
        if interval <= 0:
            return
        with self._tick_lock:
            now = time.monotonic()
            if now - self._last_summary < interval:
                return
            self._last_summary = now
        try:
            log.info("%s", self.summary_line())
        except Exception as exc:  # called from replays and step ends: never into the engine
            once.warn(f"the periodic summary failed ({type(exc).__name__}: {exc})")

    def at_exit(self) -> None:
        """The summary once more at exit, if anything was counted."""
        try:
            s = self.snapshot()
            if s["intercepted"]["calls"] or s["graph_replays"]["replays"]:
                log.info("%s", summary_line(s))
        except Exception as exc:  # the engine's exit is not ours to disturb
            once.warn(f"the summary at exit failed ({type(exc).__name__}: {exc})")

    def snapshot(self) -> dict:
        """See ``stats.snapshot``."""
        with self._lock:
            totals, passthrough = Counter(self._totals), Counter(self._passthrough)
        for open_tally in self._steps.open_tallies():
            if not open_tally.empty():
                _fold(totals, passthrough, open_tally)
        intercepted = {"steps": totals["steps"], **{name: totals[name] for name in _FIELDS},
                       "launches_avoided": totals["injected"] - totals["computed"]}
        replays = self._graphs.totals()
        return {
            "intercepted": intercepted,
            "graph_replays": replays,
            "launches_avoided": intercepted["launches_avoided"] + replays["launches_avoided"],
            "passthrough": dict(passthrough),
            "engine": self._engine_counters(),
        }

    def summary_line(self) -> str:
        return summary_line(self.snapshot())

    def _engine_counters(self) -> dict:
        """What the adapters count about their engines (``attn_sched_engine_counters``)."""
        merged: dict = {}
        for plugin, counters in self._hooks.each("attn_sched_engine_counters"):
            try:
                found = {engine: dict(values) for engine, values in counters.items()}
            except Exception as exc:  # not {engine: {counter: count}}
                failed("attn_sched_engine_counters", plugin, exc)
                continue
            for engine, values in found.items():
                merged.setdefault(engine, {}).update(values)
        return merged


def summary_line(s: dict) -> str:
    """One log line of a ``snapshot``."""
    i, g = s["intercepted"], s["graph_replays"]
    reasons = ", ".join(f"{r}={n}" for r, n in sorted(s["passthrough"].items())) or "none"
    engine = "".join(f"; {e}: " + ", ".join(f"{k}={n}" for k, n in sorted(c.items())) for e, c in s["engine"].items())
    return (
        f"attn-sched: prepare launches avoided {s['launches_avoided']}: {g['launches_avoided']} in {g['replays']} "
        f"CUDA-graph replays ({g['graphs']} graphs captured), {i['launches_avoided']} in {i['calls']} intercepted "
        f"FA3 calls ({i['steps']} steps; metadata computed {i['computed']}, injected {i['injected']}); "
        f"passed through: {reasons}{engine}"
    )
