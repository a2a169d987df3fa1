"""The per-step metadata cache of one thread, and the step's counters.

An entry lives until the step ends; it holds the metadata tensor and the batch tensors it was
computed from. Holding them keeps their storage alive, so an equal data pointer with an equal
version counter within the step means the very same, unmodified data (views share the counter).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

# bound on entries per thread and step; past it the entries are dropped (reuse lost, never exactness)
MAX_ENTRIES = 256


@dataclass
class StepTally:
    """What happened in one step on one thread (folded into the stats at step end)."""

    step: int
    calls: int = 0
    injected: int = 0
    computed: int = 0
    passthrough: Counter = field(default_factory=Counter)
    verify_mismatches: int = 0

    @property
    def launches_avoided(self) -> int:
        """Each injected call skips FA3's own prepare kernel; each computation launches one."""
        return self.injected - self.computed

    def empty(self) -> bool:
        return self.calls == 0


@dataclass(frozen=True)
class ComputedEvent:
    """A metadata tensor was computed (the ``attn_sched_metadata_computed`` payload)."""

    provider: str
    step: int
    context: tuple
    signature: tuple
    batch_size: int
    max_seqlen_q: int
    max_seqlen_k: int
    page_size: int | None
    numel: int


def fingerprint(t: torch.Tensor | None):
    """Identity of a batch tensor already checked to be a dense 1-D int32 vector of known length."""
    if t is None:
        return None
    return (t.data_ptr(), t._version, t.get_device())


class StepCache:
    """Metadata of the current step on this thread, by key."""

    __slots__ = ("tally", "entries")

    def __init__(self, step: int):
        self.tally = StepTally(step)
        self.entries: dict[tuple, tuple[torch.Tensor, tuple]] = {}

    def get(self, key: tuple) -> torch.Tensor | None:
        entry = self.entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: tuple, metadata: torch.Tensor, pinned: tuple) -> None:
        self.entries[key] = (metadata, pinned)

    def full(self) -> bool:
        return len(self.entries) >= MAX_ENTRIES
