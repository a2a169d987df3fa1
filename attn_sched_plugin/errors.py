"""The core's own vocabulary of failure: a call we decline, a build we cannot use, FA3 refusing our metadata."""

from __future__ import annotations

import re

import torch


class Decline(Exception):
    """The call cannot be given metadata that is provably exact; ``reason`` is a stable short code."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ProviderUnavailable(Exception):
    """The build, or its ``get_scheduler_metadata`` op, is not usable in this process."""


# FA3's own checks of a supplied scheduler_metadata, as its flash_api.cpp words them: upstream and
# sgl-kernel "scheduler_metadata must have shape (metadata_size)" / "must have dtype int32" / "must be
# contiguous" / "must be on CUDA"; vLLM's stable-ABI fork "scheduler_metadata must have 1 dimensions,
# got 2" / "scheduler_metadata dimension 0 must have size 5, got 9"
_REJECTION = re.compile(r"\bscheduler_metadata (?:dimension \d+ )?must ")
# RuntimeError subclasses that are never a refusal: they propagate exactly as FA3 alone raises them
_NOT_REJECTIONS = tuple(getattr(torch, name) for name in ("OutOfMemoryError", "AcceleratorError")
                        if hasattr(torch, name))


def is_rejection(exc: BaseException) -> bool:
    """Whether ``exc`` is FA3 refusing a supplied ``scheduler_metadata`` (and nothing else)."""
    return not isinstance(exc, _NOT_REJECTIONS) and _REJECTION.search(str(exc)) is not None
