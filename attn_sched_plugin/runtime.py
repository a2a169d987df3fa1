"""Steps: the unit of reuse. Adapters call ``new_step()`` at every engine metadata-init.

State is per thread: each thread (each engine worker, each device's runner) has its own step
and cache, so threads never see each other's metadata.
"""

from __future__ import annotations

import itertools
import threading

from .cache import StepCache

_local = threading.local()
_step_ids = itertools.count(1)


def state() -> StepCache:
    """This thread's current step."""
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = StepCache(next(_step_ids))
    return cache


def new_step() -> None:
    """End this thread's step (its metadata is dropped) and start a new one.

    Call it wherever the engine (re)builds its attention metadata, including before a CUDA-graph
    capture and its warm-up runs; custom engines call it once per forward step.
    """
    old = getattr(_local, "cache", None)
    _local.cache = StepCache(next(_step_ids))
    if old is not None and not old.tally.empty():
        from .plugins import manager

        manager().hook.attn_sched_step_end(tally=old.tally)


def open_tally():
    """This thread's unfinished step counters (for ``stats.snapshot``)."""
    cache = getattr(_local, "cache", None)
    return None if cache is None else cache.tally
