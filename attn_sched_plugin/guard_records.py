"""``GuardRecords``: what the guard has learnt in one process (``activation.PROCESS.guard``).

The parameters each engine ``get_scheduler_metadata`` result was computed for, the size of this
build's metadata per call's parameters, and the calls replaced per reason. Both tables are bounded:
when one is full it is emptied, and a forgotten entry only means a mismatch is no longer proven.
"""

from __future__ import annotations

import threading
from collections import Counter

import torch

MAX_ENTRIES = 256


def tensor_key(t: torch.Tensor) -> tuple:
    # a record pins its tensor, so an equal pointer is the same memory; inference tensors have no
    # version counter (engines never rewrite a fresh get_scheduler_metadata result in place)
    return t.data_ptr(), t.numel(), None if t.is_inference() else t._version


class GuardRecords:
    def __init__(self):
        self._lock = threading.Lock()
        # (data pointer, numel, version) of an engine metadata tensor -> (the tensor, pinned; its parameters)
        self._records: dict[tuple, tuple[torch.Tensor, dict]] = {}
        self._sizes: dict[tuple, int] = {}  # (provider name, signature, sizes) -> numel of this build's metadata
        self._counts: Counter = Counter()  # (provider name, reason) -> calls whose engine metadata was replaced

    def _remember(self, table: dict, key, value) -> None:
        with self._lock:
            if len(table) >= MAX_ENTRIES:
                table.clear()
            table[key] = value

    def record(self, metadata: torch.Tensor, parameters: dict) -> None:
        self._remember(self._records, tensor_key(metadata), (metadata, parameters))

    def parameters_of(self, metadata: torch.Tensor) -> dict | None:
        """The parameters ``metadata`` was computed for, if the engine's call was recorded."""
        record = self._records.get(tensor_key(metadata))
        return None if record is None else record[1]

    def note_size(self, key: tuple, numel: int) -> None:
        self._remember(self._sizes, key, numel)

    def size(self, key: tuple) -> int | None:
        return self._sizes.get(key)

    def count(self, provider: str, reason: str) -> bool:
        """Count one replacement; True the first time ``reason`` is seen (its line is logged then)."""
        with self._lock:
            first = not any(r == reason for _, r in self._counts)
            self._counts[(provider, reason)] += 1
        return first

    def counts(self, provider: str) -> dict[str, int]:
        with self._lock:
            return {f"guard_{reason}": n for (name, reason), n in self._counts.items() if name == provider}
