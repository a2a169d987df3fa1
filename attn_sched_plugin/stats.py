"""The statistics of this process, readable from Python (``activation.PROCESS.observer`` keeps them)."""

from __future__ import annotations

from . import activation


def snapshot() -> dict:
    """Counters of this process: ``intercepted`` (FA3 calls through the wrapper: eager or while a graph
    is captured), ``graph_replays`` (captured graphs replayed, with the prepare launches they avoided),
    the total of launches avoided, pass-throughs by reason, and the adapters' engine counters."""
    return activation.PROCESS.observer.snapshot()


def summary_line() -> str:
    return activation.PROCESS.observer.summary_line()
