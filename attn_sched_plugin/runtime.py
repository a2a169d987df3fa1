"""Steps: the unit of reuse. Adapters call ``new_step()`` at every engine metadata-init.

State is per thread: each thread (each engine worker, each device's runner) has its own step
and cache, so threads never see each other's metadata. Each thread's current step is also
registered (when it starts, never per call) so ``stats.snapshot()`` includes the open counts of
threads that never end a step themselves (vLLM's dual-batch-overlap threads).
"""

from __future__ import annotations

import itertools
import threading

from .cache import StepCache

_local = threading.local()
_step_ids = itertools.count(1)
_open: dict[int, StepCache] = {}  # thread id -> that thread's current step


def state() -> StepCache:
    """This thread's current step."""
    cache = getattr(_local, "cache", None)
    return _start() if cache is None else cache


def new_step() -> None:
    """End this thread's step (its metadata is dropped) and start a new one.

    Call it wherever the engine (re)builds its attention metadata, including before a CUDA-graph
    capture and its warm-up runs; custom engines call it once per forward step.
    """
    _start()


def _start() -> StepCache:
    """A new step for this thread; the step it replaces (this thread's, or that of a finished thread
    whose id this one got) is handed to the step-end observers, guarded."""
    ident = threading.get_ident()
    old = _open.get(ident)
    cache = _local.cache = _open[ident] = StepCache(next(_step_ids))
    if old is not None and not old.tally.empty():
        from .plugins import notify

        notify("attn_sched_step_end", tally=old.tally)
    return cache


def open_tallies() -> list:
    """Every thread's unfinished step counters (for ``stats.snapshot``)."""
    return [cache.tally for cache in list(_open.values())]
