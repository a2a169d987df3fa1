"""The per-step metadata cache of one thread, and the step's counters.

An entry lives until the step ends; it holds the metadata tensor and the batch tensors it was
computed from. Holding them keeps their storage alive, so an equal data pointer with an equal
version counter within the step means the very same, unmodified data (views share the counter).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from .descriptor import check_batch_tensor

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


class StepCache:
    """Metadata of the current step on this thread, by key, and the step's checked batch tensors."""

    __slots__ = ("tally", "entries", "checked")

    def __init__(self, step: int):
        self.tally = StepTally(step)
        self.entries: dict[tuple, tuple[torch.Tensor, tuple]] = {}
        # id(t) -> (t, (data pointer, version), length) of batch tensors found valid this step
        self.checked: dict[int, tuple] = {}

    def get(self, key: tuple) -> torch.Tensor | None:
        entry = self.entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: tuple, metadata: torch.Tensor, pinned: tuple) -> None:
        self.entries[key] = (metadata, pinned)

    def full(self) -> bool:
        return len(self.entries) >= MAX_ENTRIES

    def identities(self, sizes: tuple, tensors: tuple) -> tuple:
        """The batch tensors' identities (data pointer, version), each checked by ``check_batch_tensor``.

        The device is not part of it: the key's context holds it, and FA3 rejects batch tensors on
        another device than the call's anyway.

        Engines pass the same few tensors to every layer of a step, so a check is done once per
        tensor object and state: the memo pins the tensor (its id cannot be reused this step) and
        is valid only while its version counter, data pointer and required length are unchanged.
        Every in-place op (``resize_``, ``set_``, ``as_strided_``, writes) bumps the version, and
        ``t.data = other`` moves the data pointer; what bypasses both (raw-pointer writes, ``.data``
        swapped for a tensor at the same address) is the known limit of the whole key.
        """
        batch_size = sizes[0]
        # descriptor.BATCH_TENSORS unrolled: a loop over the table adds ~1 us per call (measured)
        seqused_k, cu_seqlens_q, cu_seqlens_k, seqused_q, leftpad_k = tensors
        return (
            self._identity(seqused_k, "seqused_k", batch_size),
            None if cu_seqlens_q is None else self._identity(cu_seqlens_q, "cu_seqlens_q", batch_size + 1),
            None if cu_seqlens_k is None else self._identity(cu_seqlens_k, "cu_seqlens_k", batch_size + 1),
            None if seqused_q is None else self._identity(seqused_q, "seqused_q", batch_size),
            None if leftpad_k is None else self._identity(leftpad_k, "leftpad_k", batch_size),
        )

    def _identity(self, t, name: str, length: int) -> tuple:
        seen = self.checked.get(id(t))
        if seen is not None:  # the same object: the memo pins it
            identity = (t.data_ptr(), t._version)
            if seen[1] == identity and seen[2] == length:
                return identity
        check_batch_tensor(t, name, length)
        identity = (t.data_ptr(), t._version)
        if len(self.checked) >= MAX_ENTRIES:
            self.checked.clear()
        self.checked[id(t)] = (t, identity, length)
        return identity
