"""``ATTN_SCHED_VERIFY=1``: run each injected call again without metadata and compare bitwise."""

from __future__ import annotations

import torch

from . import once


def bitwise_equal(a, b) -> bool:
    """Same structure, dtypes, shapes and bytes (NaNs with equal bits compare equal)."""
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(map(bitwise_equal, a, b))
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape:
            return False
        return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))
    return a == b


def _snapshot(out):
    if isinstance(out, (tuple, list)):
        return type(out)(_snapshot(o) for o in out)
    return out.clone() if isinstance(out, torch.Tensor) else out


def verified_call(call, metadata, tally, signature) -> object:
    """``call(metadata)``, then ``call(None)``; return the plain result, report any difference.

    Skipped inside CUDA-graph capture (nothing has run yet to compare).
    """
    with_metadata = call(metadata)
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        tally.passthrough["verify_skipped_in_capture"] += 1
        return with_metadata
    expected = _snapshot(with_metadata)
    plain = call(None)
    if not bitwise_equal(expected, plain):
        tally.verify_mismatches += 1
        once.error(f"VERIFY: output with shared metadata differs from FA3's own for {signature}")
    return plain
