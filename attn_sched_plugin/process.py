"""``Process``: everything the core remembers in one engine process, in one object (``activation.PROCESS``).

Its parts: the hook manager, the per-thread steps, the captured graphs' counts, the statistics
observer (registered here, on this process's hooks, and told of graph replays), the refusals FA3
made of our metadata, what the guard learnt of the engine's own metadata, and what ``instrument``
did per engine. Tests start over by building a new one.
"""

from __future__ import annotations

from .graphs import GraphCounts
from .guard_records import GuardRecords
from .hooks import Hooks
from .observer import StatsObserver
from .records import AdapterReport
from .steps import Steps

# (provider name, signature, batch sizes) whose metadata FA3 refused once: never injected again. The
# derivation mirrors the forward, so a refusal means a build we do not know; keying on the exact
# parameters keeps every other batch of the signature shared (each new refusal costs one retry).
# Bounded: when full it is emptied, and a forgotten refusal costs one more refused try.
MAX_REJECTED = 1024


class Process:
    def __init__(self):
        self.hooks = Hooks()
        self.steps = Steps(self.hooks)
        self.graphs = GraphCounts()
        self.observer = StatsObserver(self.steps, self.graphs, self.hooks)
        self.hooks.manager.register(self.observer, name="attn_sched.stats")
        self.graphs.on_replay = self.observer.tick
        self.rejected: set[tuple] = set()
        self.guard = GuardRecords()
        self.installed: dict[str, AdapterReport | None] = {}  # engine -> what ``instrument`` did

    def reject(self, key: tuple) -> None:
        """FA3 refused our metadata for ``key``: calls with it pass through from now on."""
        if len(self.rejected) >= MAX_REJECTED:
            self.rejected.clear()
        self.rejected.add(key)
