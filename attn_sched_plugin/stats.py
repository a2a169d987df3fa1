"""Per-process statistics: an observer plugin on the step-end hook, readable from Python.

Two sources: the calls that went through the FA3 wrapper (folded in at each step end, keeping
hooks off the per-call path; ``snapshot()`` adds every thread's unfinished step), and the
CUDA-graph replays counted by ``graphs``, where nearly all the work happens. A summary is logged
every ``ATTN_SCHED_SUMMARY_INTERVAL`` seconds (checked at step ends and every
``graphs.SUMMARY_EVERY`` replays of a graph) and at exit. Reading the statistics never raises: a
third-party counters hook that fails is logged once and left out.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import Counter

from . import graphs, once, plugins, runtime, switches
from .hookspecs import hookimpl

log = logging.getLogger("attn_sched_plugin")


_FIELDS = ("calls", "injected", "computed", "verify_mismatches")


def _fold(totals: Counter, passthrough: Counter, tally) -> None:
    for name in _FIELDS:
        totals[name] += getattr(tally, name)
    passthrough.update(dict(tally.passthrough))  # a copy: another thread may be adding to it


class StatsObserver:
    def __init__(self):
        self._lock = threading.Lock()
        self._tick_lock = threading.Lock()
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
            log.info("%s", summary_line())
        except Exception as exc:  # called from replays and step ends: never into the engine
            once.warn(f"the periodic summary failed ({type(exc).__name__}: {exc})")

    def snapshot(self) -> dict:
        with self._lock:
            totals, passthrough = Counter(self._totals), Counter(self._passthrough)
        for open_tally in runtime.open_tallies():
            if not open_tally.empty():
                _fold(totals, passthrough, open_tally)
        intercepted = {"steps": totals["steps"], **{name: totals[name] for name in _FIELDS},
                       "launches_avoided": totals["injected"] - totals["computed"]}
        replays = graphs.totals()
        return {
            "intercepted": intercepted,
            "graph_replays": replays,
            "launches_avoided": intercepted["launches_avoided"] + replays["launches_avoided"],
            "passthrough": dict(passthrough),
            "engine": _engine_counters(),
        }


def _engine_counters() -> dict:
    """What the adapters count about their engines (``attn_sched_engine_counters``)."""
    merged: dict = {}
    for plugin, counters in plugins.each("attn_sched_engine_counters"):
        try:
            found = {engine: dict(values) for engine, values in counters.items()}
        except Exception as exc:  # not {engine: {counter: count}}
            plugins.failed("attn_sched_engine_counters", plugin, exc)
            continue
        for engine, values in found.items():
            merged.setdefault(engine, {}).update(values)
    return merged


OBSERVER = StatsObserver()
graphs.on_replay = OBSERVER.tick


def snapshot() -> dict:
    """Counters of this process: ``intercepted`` (FA3 calls through the wrapper: eager or while a graph
    is captured), ``graph_replays`` (captured graphs replayed, with the prepare launches they avoided),
    the total of launches avoided, pass-throughs by reason, and the adapters' engine counters."""
    return OBSERVER.snapshot()


def summary_line() -> str:
    s = snapshot()
    i, g = s["intercepted"], s["graph_replays"]
    reasons = ", ".join(f"{r}={n}" for r, n in sorted(s["passthrough"].items())) or "none"
    engine = "".join(f"; {e}: " + ", ".join(f"{k}={n}" for k, n in sorted(c.items())) for e, c in s["engine"].items())
    return (
        f"attn-sched: prepare launches avoided {s['launches_avoided']}: {g['launches_avoided']} in {g['replays']} "
        f"CUDA-graph replays ({g['graphs']} graphs captured), {i['launches_avoided']} in {i['calls']} intercepted "
        f"FA3 calls ({i['steps']} steps; metadata computed {i['computed']}, injected {i['injected']}); "
        f"passed through: {reasons}{engine}"
    )


@atexit.register
def _at_exit() -> None:
    try:
        s = snapshot()
        if s["intercepted"]["calls"] or s["graph_replays"]["replays"]:
            log.info("%s", summary_line())
    except Exception as exc:  # the engine's exit is not ours to disturb
        once.warn(f"the summary at exit failed ({type(exc).__name__}: {exc})")
