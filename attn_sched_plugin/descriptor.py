"""From a forward call's own arguments to the exact parameters FA3 schedules with.

This mirrors ``mha_fwd`` in FA3's ``flash_api.cpp``: batch size from ``q`` (or ``cu_seqlens_q``),
``max_seqlen_k`` from the page-table width times the page size for paged KV (not the live
maximum), head dims from ``q`` / ``v`` (so MLA's ``qv`` case gets ``headdim_v`` = 512), and the raw
window / causal / chunk values, which ``get_scheduler_metadata`` normalises exactly as the forward
does. Whatever cannot be derived exactly raises ``Decline`` and the call passes through.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Decline(Exception):
    """The call cannot be given metadata that is provably exact; ``reason`` is a stable short code."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class AttnSignature(NamedTuple):
    """Per-layer attention parameters that shape the schedule."""

    num_heads: int
    num_heads_k: int
    headdim: int
    headdim_v: int
    qkv_dtype: torch.dtype
    is_causal: bool
    window_size_left: int
    window_size_right: int
    attention_chunk: int
    has_softcap: bool
    num_splits: int
    pack_gqa: bool | None
    sm_margin: int


class BatchDescriptor(NamedTuple):
    """The batch as FA3 sees it: sizes derived like the forward, plus the per-request tensors."""

    batch_size: int
    max_seqlen_q: int
    max_seqlen_k: int
    page_size: int | None
    max_seqlen_k_new: int
    seqused_k: torch.Tensor
    cu_seqlens_q: torch.Tensor | None
    cu_seqlens_k: torch.Tensor | None
    seqused_q: torch.Tensor | None
    leftpad_k: torch.Tensor | None


# forward-op arguments that must be absent for us to schedule the call
_UNSUPPORTED = ("kv_batch_idx", "rotary_cos", "cu_seqlens_k_new")


def _int_arg(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Decline(f"{name}_not_int")
    return value


def _batch_tensor(t, name: str, batch_size: int) -> torch.Tensor:
    """FA3 reads these as dense int32 vectors of length ``batch_size`` (``cu_*``: +1)."""
    if not isinstance(t, torch.Tensor):
        raise Decline(f"{name}_not_tensor")
    if t.dtype is not torch.int32 or t.dim() != 1 or t.shape[0] != batch_size or not t.is_contiguous():
        raise Decline(f"{name}_layout")
    if t.is_inference():
        raise Decline("inference_tensor")  # no version counter: in-place writes would go unseen
    return t


def derive(op: dict) -> tuple[AttnSignature, BatchDescriptor]:
    """The scheduling parameters of a forward call given by forward-op argument names."""
    q, k, v = op["q"], op["k"], op["v"]
    for name in _UNSUPPORTED:
        if op.get(name) is not None:
            raise Decline(name)
    seqused_k = op.get("seqused_k")
    if seqused_k is None:
        raise Decline("no_seqused_k")  # get_scheduler_metadata cannot describe it
    if not (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)):
        raise Decline("qkv_not_tensor")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise Decline("dtype_mismatch")  # FA3 rejects it; let it say so

    cu_seqlens_q = op.get("cu_seqlens_q")
    if cu_seqlens_q is None:
        if q.dim() != 4:
            raise Decline("q_rank")
        batch_size, max_seqlen_q = q.shape[0], q.shape[1]
    else:
        if q.dim() != 3 or not isinstance(cu_seqlens_q, torch.Tensor) or cu_seqlens_q.dim() != 1:
            raise Decline("q_rank")
        batch_size = cu_seqlens_q.shape[0] - 1
        max_seqlen_q = _int_arg(op.get("max_seqlen_q"), "max_seqlen_q")
        _batch_tensor(cu_seqlens_q, "cu_seqlens_q", batch_size + 1)

    page_table = op.get("page_table")
    cu_seqlens_k = op.get("cu_seqlens_k")
    if cu_seqlens_k is not None:
        if page_table is not None or k.dim() != 3:
            raise Decline("k_rank")
        page_size = None
        max_seqlen_k = _int_arg(op.get("max_seqlen_k"), "max_seqlen_k")
        _batch_tensor(cu_seqlens_k, "cu_seqlens_k", batch_size + 1)
    elif k.dim() != 4:
        raise Decline("k_rank")
    elif page_table is not None:
        if not isinstance(page_table, torch.Tensor) or page_table.dim() != 2:
            raise Decline("page_table_layout")
        page_size = k.shape[1]
        max_seqlen_k = page_table.shape[1] * page_size
    else:
        page_size = None
        max_seqlen_k = k.shape[1]

    k_new = op.get("k_new")
    max_seqlen_k_new = 0 if k_new is None else k_new.shape[1]

    window = op.get("window_size")
    window = (-1, -1) if window is None else tuple(window)
    if len(window) != 2:
        raise Decline("window_size")
    softcap = op.get("softcap") or 0.0
    pack_gqa = op.get("pack_gqa")
    if pack_gqa is False:
        # FA3's forward forces PackGQA for split / non-TMA paged kernels while get_scheduler_metadata
        # keeps an explicit False: 215 of 5000 random fa3-fwd calls differed on an H100
        # (benchmarks/results/gpu-exactness-*.json). None and True agree; False is never shared.
        raise Decline("pack_gqa_false")

    sig = AttnSignature(
        num_heads=q.shape[-2],
        num_heads_k=k.shape[-2],
        headdim=q.shape[-1],
        headdim_v=v.shape[-1],
        qkv_dtype=q.dtype,
        is_causal=bool(op.get("causal", False)),
        window_size_left=_int_arg(window[0], "window_size"),
        window_size_right=_int_arg(window[1], "window_size"),
        attention_chunk=_int_arg(op.get("attention_chunk") or 0, "attention_chunk"),
        has_softcap=float(softcap) > 0.0,
        num_splits=_int_arg(op.get("num_splits") or 0, "num_splits"),
        pack_gqa=pack_gqa,
        sm_margin=_int_arg(op.get("sm_margin") or 0, "sm_margin"),
    )
    seqused_q, leftpad_k = op.get("seqused_q"), op.get("leftpad_k")
    batch = BatchDescriptor(
        batch_size=batch_size,
        max_seqlen_q=max_seqlen_q,
        max_seqlen_k=max_seqlen_k,
        page_size=page_size,
        max_seqlen_k_new=max_seqlen_k_new,
        seqused_k=_batch_tensor(seqused_k, "seqused_k", batch_size),
        cu_seqlens_q=cu_seqlens_q,
        cu_seqlens_k=cu_seqlens_k,
        seqused_q=None if seqused_q is None else _batch_tensor(seqused_q, "seqused_q", batch_size),
        leftpad_k=None if leftpad_k is None else _batch_tensor(leftpad_k, "leftpad_k", batch_size),
    )
    return sig, batch


def scheduler_arguments(sig: AttnSignature, batch: BatchDescriptor) -> dict:
    """``get_scheduler_metadata`` arguments under the upstream op's schema names."""
    args = sig._asdict()
    args.update(batch._asdict())
    args["cu_seqlens_k_new"] = None
    return args
