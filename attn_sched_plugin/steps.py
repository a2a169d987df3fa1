"""``Steps``: the unit of reuse, per thread. Adapters start a new step at every engine metadata-init.

Each thread (each engine worker, each device's runner) has its own step and cache, so threads
never see each other's metadata. Each thread's current step is also registered (when it starts,
never per call) so the statistics include the open counts of threads that never end a step
themselves (vLLM's dual-batch-overlap threads).
"""

from __future__ import annotations

import itertools
import threading

from .cache import StepCache, StepTally


class Steps:
    def __init__(self, hooks):
        self.local = threading.local()  # ``.cache``: this thread's current step (``runtime.state`` reads it)
        self._hooks = hooks
        self._ids = itertools.count(1)
        self._open: dict[int, StepCache] = {}  # thread id -> that thread's current step

    def start(self) -> StepCache:
        """A new step for this thread; the step it replaces (this thread's, or that of a finished thread
        whose id this one got) is handed to the step-end observers, guarded."""
        ident = threading.get_ident()
        old = self._open.get(ident)
        cache = self.local.cache = self._open[ident] = StepCache(next(self._ids))
        if old is not None and not old.tally.empty():
            self._hooks.notify("attn_sched_step_end", tally=old.tally)
        return cache

    def open_tallies(self) -> list[StepTally]:
        """Every thread's unfinished step counters (for the statistics)."""
        return [cache.tally for cache in list(self._open.values())]
