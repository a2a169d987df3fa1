"""The per-step metadata cache of one thread, the step's counters, and the batch tensors' checks.

An entry lives until the step ends; it holds the metadata tensor and the batch tensors it was
computed from. Holding them keeps their storage alive, so an equal data pointer with an equal
version counter within the step means the very same, unmodified data (views share the counter).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from .errors import Decline

# bound on entries per thread and step; past it the entries are dropped (reuse lost, never exactness)
MAX_ENTRIES = 256

_INT32 = torch.int32

# the batch tensors in ``BatchDescriptor`` order, with how many entries FA3 reads beyond the batch size
BATCH_TENSORS = (("seqused_k", 0), ("cu_seqlens_q", 1), ("cu_seqlens_k", 1), ("seqused_q", 0), ("leftpad_k", 0))


def check_batch_tensor(t, name: str, length: int) -> None:
    """FA3 reads these as dense int32 vectors of ``length`` entries (batch size, ``cu_*``: +1)."""
    if not isinstance(t, torch.Tensor):
        raise Decline(f"{name}_not_tensor")
    shape = t.shape
    if t.dtype is not _INT32 or len(shape) != 1 or shape[0] != length or not t.is_contiguous():
        raise Decline(f"{name}_layout")
    if t.is_inference():
        raise Decline("inference_tensor")  # no version counter: in-place writes would go unseen


def check_batch_tensors(sizes: tuple, tensors: tuple) -> None:
    """``check_batch_tensor`` for each batch tensor present (``StepCache.identities`` memoises it)."""
    batch_size = sizes[0]
    for t, (name, extra) in zip(tensors, BATCH_TENSORS):
        if t is not None:
            check_batch_tensor(t, name, batch_size + extra)


@dataclass
class StepTally:
    """What happened in one step on one thread (folded into the stats at step end)."""

    step: int
    calls: int = 0
    injected: int = 0
    computed: int = 0
    passthrough: Counter = field(default_factory=Counter)
    verify_mismatches: int = 0

    def empty(self) -> bool:
        return self.calls == 0


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
        """Keep ``metadata`` (and the batch tensors it was computed from) for the step; when the step
        already holds ``MAX_ENTRIES``, its entries are dropped first."""
        if len(self.entries) >= MAX_ENTRIES:
            self.entries.clear()
        self.entries[key] = (metadata, pinned)

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
        # BATCH_TENSORS unrolled: a loop over the table adds ~1 us per call (measured)
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
