"""From a forward call's own arguments to the exact parameters FA3 schedules with.

This mirrors ``mha_fwd`` in FA3's ``flash_api.cpp``: batch size from ``q`` (or ``cu_seqlens_q``),
``max_seqlen_k`` as the call's build derives it (upstream and sgl-attn: the page-table width times
the page size for paged KV, not the live maximum; vLLM's fork: the call's ``max_seqlen_k`` whenever
given), head dims from ``q`` / ``v`` (so MLA's ``qv`` case gets ``headdim_v`` = 512), and the raw
window / causal / chunk values, which ``get_scheduler_metadata`` normalises exactly as the forward
does. Whatever cannot be derived exactly raises ``Decline`` and the call passes through, and so do
the inputs for which FA3's forward and ``get_scheduler_metadata`` themselves disagree.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .cache import check_batch_tensors
from .errors import Decline


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


def _int_arg(value, name: str) -> int:
    if value.__class__ is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise Decline(f"{name}_not_int")
    return value


# the forward-op arguments ``parameters`` reads, in the order it unpacks them (``Binder.fields``)
OP_FIELDS = (
    "q", "k", "v", "k_new", "cu_seqlens_k_new", "kv_batch_idx", "rotary_cos", "seqused_k", "cu_seqlens_q",
    "max_seqlen_q", "page_table", "cu_seqlens_k", "max_seqlen_k", "window_size", "softcap", "pack_gqa", "causal",
    "attention_chunk", "num_splits", "sm_margin", "seqused_q", "leftpad_k",
)


def parameters(fields: tuple, seqlen_k_from_call: bool = False) -> tuple[tuple, tuple, tuple]:
    """The scheduling parameters of a forward call, from its values of ``OP_FIELDS``, as plain tuples.

    ``seqlen_k_from_call``: the build's forward takes ``max_seqlen_k`` from the call whenever it is
    given (``providers.Provider.seqlen_k_from_call``); otherwise only for varlen K. Returns (signature, batch
    sizes, batch tensors) in the field order of ``AttnSignature`` and ``BatchDescriptor``, plain: the
    reuse path only hashes them, and a miss hands them to ``Provider.compute`` as they are (named
    tuples cost a build per call; ``derive_fields`` names them for callers off the hot path). Each ``.shape`` is read once (a torch call each). The
    batch tensors' layout is NOT checked here: ``cache.check_batch_tensors`` (or its per-step memo
    in ``StepCache.identities``) must run before they are used.
    """
    (q, k, v, k_new, cu_seqlens_k_new, kv_batch_idx, rotary_cos, seqused_k, cu_seqlens_q, max_seqlen_q, page_table,
     cu_seqlens_k, max_seqlen_k, window, softcap, pack_gqa, causal, attention_chunk, num_splits, sm_margin,
     seqused_q, leftpad_k) = fields
    if kv_batch_idx is not None:
        raise Decline("kv_batch_idx")
    if rotary_cos is not None:
        raise Decline("rotary_cos")
    # FA3's mha_fwd reads cu_seqlens_k_new only when k_new is given (SGLang passes it with k=None)
    if k_new is not None and cu_seqlens_k_new is not None:
        raise Decline("cu_seqlens_k_new")  # varlen append: not described by get_scheduler_metadata here
    if seqused_k is None:
        # get_scheduler_metadata takes seqused_k as given and hard-codes a varlen forward (vLLM's fork at
        # 617264c1, hopper/flash_api.cpp:662/679, semaphore 686); mha_fwd is varlen only with cu_seqlens_q/k,
        # seqused_q/k or leftpad_k (927, 1053, semaphore 1075-1077). With seqused_k both always agree;
        # without it the call is not describable (flash-attention #161/#162: the sizes differ)
        raise Decline("no_seqused_k")
    if not (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)):
        raise Decline("qkv_not_tensor")
    dtype = q.dtype
    if k.dtype is not dtype or v.dtype is not dtype:
        raise Decline("dtype_mismatch")  # FA3 rejects it; let it say so
    q_shape, k_shape = q.shape, k.shape

    if cu_seqlens_q is None:
        if len(q_shape) != 4:
            raise Decline("q_rank")
        batch_size, max_seqlen_q = q_shape[0], q_shape[1]
    else:
        if len(q_shape) != 3 or not isinstance(cu_seqlens_q, torch.Tensor):
            raise Decline("q_rank")
        cu_shape = cu_seqlens_q.shape
        if len(cu_shape) != 1:
            raise Decline("q_rank")
        batch_size = cu_shape[0] - 1

    if cu_seqlens_k is not None:
        if page_table is not None or len(k_shape) != 3:
            raise Decline("k_rank")
        page_size = None
    elif len(k_shape) != 4:
        raise Decline("k_rank")
    elif page_table is not None:
        table_shape = page_table.shape if isinstance(page_table, torch.Tensor) else ()
        if len(table_shape) != 2:
            raise Decline("page_table_layout")
        page_size = k_shape[1]
        if max_seqlen_k is None or not seqlen_k_from_call:
            max_seqlen_k = table_shape[1] * page_size
    else:
        page_size = None
        if max_seqlen_k is None or not seqlen_k_from_call:
            max_seqlen_k = k_shape[1]

    try:
        window_left, window_right = (-1, -1) if window is None else window
    except (TypeError, ValueError):
        raise Decline("window_size") from None
    attention_chunk, num_splits, sm_margin = attention_chunk or 0, num_splits or 0, sm_margin or 0
    if not (max_seqlen_q.__class__ is int and max_seqlen_k.__class__ is int and window_left.__class__ is int
            and window_right.__class__ is int and attention_chunk.__class__ is int and num_splits.__class__ is int
            and sm_margin.__class__ is int):
        # the slow path names the first offender (ints are usually exactly ``int``: one test each)
        for value, name in ((max_seqlen_q, "max_seqlen_q"), (max_seqlen_k, "max_seqlen_k"),
                            (window_left, "window_size"), (window_right, "window_size"),
                            (attention_chunk, "attention_chunk"), (num_splits, "num_splits"),
                            (sm_margin, "sm_margin")):
            _int_arg(value, name)
    if pack_gqa is False:
        # FA3's forward forces PackGQA for split / non-TMA paged kernels while get_scheduler_metadata
        # keeps an explicit False: 215 of 5000 random fa3-fwd calls differed on an H100
        # (benchmarks/results/gpu-exactness-*.json). None and True agree; False is never shared.
        raise Decline("pack_gqa_false")
    headdim, headdim_v = q_shape[-1], v.shape[-1]
    if headdim <= 64 < headdim_v <= 192:
        # FA3 runs this pair with its 64 x 256 kernel and the forward's own prepare uses that kernel's
        # tiles, while get_scheduler_metadata sizes tiles for headdim_v rounded up (96/128/192)
        raise Decline("headdim_v_tiles")
    signature = (
        q_shape[-2], k_shape[-2], headdim, headdim_v, dtype, bool(causal), window_left, window_right,
        attention_chunk, float(softcap or 0.0) > 0.0, num_splits, pack_gqa, sm_margin,
    )
    sizes = (batch_size, max_seqlen_q, max_seqlen_k, page_size, 0 if k_new is None else k_new.shape[1])
    return signature, sizes, (seqused_k, cu_seqlens_q, cu_seqlens_k, seqused_q, leftpad_k)


def derive_fields(fields: tuple, seqlen_k_from_call: bool = False) -> tuple[AttnSignature, BatchDescriptor]:
    """The checked scheduling parameters of a call, from its values of ``OP_FIELDS`` (``Binder.fields``)."""
    signature, sizes, tensors = parameters(fields, seqlen_k_from_call)
    check_batch_tensors(sizes, tensors)
    return AttnSignature(*signature), BatchDescriptor(*sizes, *tensors)
