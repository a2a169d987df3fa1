"""``Arena``: where a captured step's metadata lives, outside the CUDA graph's own memory pool.

FA3 alone allocates its scheduler metadata inside each call and frees it on return, so between layers a
captured forward's pool holds nothing of it. The plugin keeps one metadata tensor per shape for the whole
step. Held in the graph's pool, that tensor would move every later allocation of the capture, and with
them the addresses the kernels around attention work on (docs/graph-memory-layout.md). So ``GraphCounts``
gives each capture an arena, allocated just before the capture starts and so outside its pool. A
capture's computed metadata is copied into a slot of it (the copy is captured: one per shape and step),
and the computed tensor goes back to the pool at once, as FA3's own would. The graph keeps its arena.
"""

from __future__ import annotations

import torch

INTS = 16384  # 64 KiB: 7 slots at batch 512 (1 + 4 x 512 ints each); a step has 1-4 shapes
ALIGN = 32  # ints: every slot starts 128-byte aligned (FA3 addresses its parts in 16-byte steps)


class Arena:
    __slots__ = ("buffer", "used")

    def __init__(self, buffer: torch.Tensor):
        self.buffer, self.used = buffer, 0

    @classmethod
    def allocate(cls) -> Arena:
        """An arena on the current device (called before a capture begins: from the ordinary pool)."""
        return cls(torch.empty(INTS, dtype=torch.int32, device=torch.cuda.current_device()))

    def keep(self, metadata: torch.Tensor) -> torch.Tensor | None:
        """``metadata`` copied into the next free slot, or None when it does not fit or lives on another device."""
        start, end = self.used, self.used + metadata.numel()
        if end > self.buffer.numel() or metadata.device != self.buffer.device:
            return None
        slot = self.buffer[start:end]
        slot.copy_(metadata)
        self.used = -(-end // ALIGN) * ALIGN
        return slot
