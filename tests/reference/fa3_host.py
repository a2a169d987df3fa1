"""FA3's host-side scheduling decisions, transcribed for tests only (it is NOT FA3).

FA3's forward (``mha_fwd``) and ``get_scheduler_metadata`` each decide, on the host, how the
metadata tensor is laid out and what the prepare kernel computes into it: the number of splits
(a heuristic over the SM count, head counts, lengths and tile sizes), PackGQA, paged-KV TMA, the
tile sizes, the causal / local normalisation, and which per-batch vectors exist. The forward
checks only the size of supplied metadata. ``forward_layout`` and ``metadata_layout`` transcribe
both functions for H100/H200 (sm90, 132 SMs) from hopper/flash_api.cpp, heuristics.h and
tile_size.h of two source trees:

* ``vllm``: vLLM's fork, vllm-project/flash-attention at 617264c1 (2026-08): the forward takes
  ``max_seqlen_k`` from the call when given, one prepared vector plus optional dynamic-split and
  head-swizzle vectors, no batch sort, single-MMA-warpgroup decode tiles;
* ``upstream``: Dao-AILab/flash-attention hopper/ as forked by sgl-project/sgl-attn at 203b9b3
  (sgl_kernel's build): paged KV schedules with the page-table width x page size, two base
  vectors plus sort and swizzle vectors, attention chunks.

Only the bf16/fp16 and fp8 sm90 paths are transcribed; the two functions agree exactly when the
returned layouts are equal (every field the prepare kernel reads, and the tensor size). A forward
without any per-batch vector (``varlen`` False: no cu_seqlens_q/k, seqused_q/k, leftpad_k) is
transcribed for vLLM's fork only: there ``mha_fwd`` skips the prepare kernel (flash_api.cpp:927,
1053 at 617264c1) while ``get_scheduler_metadata`` hard-codes ``use_prepare_varlen = true`` and
``is_varlen = true`` (662, 679) and sizes its semaphore as ``arch >= 90 || num_splits > 1`` (686),
not as the forward's ``(causal || local) && num_splits == 1 || is_varlen`` (1075-1077): the
vllm-project/flash-attention #161/#162 mismatch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

NUM_SM = 132
MAX_BATCHES_1CTA = 992


class Layout(NamedTuple):
    size: int
    batch: int
    seqlen_q: int
    seqlen_k: int
    num_splits: int
    dynamic_split: bool
    sort: bool
    swizzle: bool
    pack_gqa: bool
    block_m: int
    block_n: int
    is_causal: bool
    is_local: bool
    window_left: int
    window_right: int


def _round_headdim(d: int) -> int:
    return next(r for r in (64, 96, 128, 192, 256) if d <= r) if d <= 256 else 256


def _round_headdim_v(dv: int) -> int:
    return next(r for r in (64, 96, 128, 192, 256) if dv <= r) if dv <= 256 else 512


def _kernel_headdims(d: int, dv: int, fp8: bool) -> tuple[int, int]:
    """The (kHeadDim, kHeadDimV) template ``run_mha_fwd`` dispatches to (its prepare uses its tiles)."""
    if d <= 64:
        if fp8:
            return 64, 64
        return (64, 512) if dv > 256 else (64, 256) if dv > 64 else (64, 64)
    if d <= 96:
        return 96, 96
    if d <= 128:
        return 128, 128
    if d <= 192:
        return (192, 128) if dv <= 128 else (192, 192)
    return 256, 256


def _tile_vllm(d, dv, causal, local, fp8, paged_non_tma, softcap, one_wg) -> tuple[int, int]:
    if not fp8:
        if d <= 64:
            if dv == 512:
                return 64, 64
            if dv == 256:
                return 128, 96
            if one_wg:
                return 64, 192
            return 192, 128 if causal else (160 if local or paged_non_tma else 192)
        if d <= 96:
            return 192, 128 if local or paged_non_tma else 144
        if d <= 128:
            if one_wg:
                return 64, 128 if causal or local or paged_non_tma else 176
            return 128, 128 if causal or local or paged_non_tma else 160
        if d <= 192:
            return 128, 96 if paged_non_tma or local else (128 if dv <= 128 else 96)
        return 128, 64 if local else 80
    if one_wg:
        return (64, 128) if d <= 96 else (64, 96)
    if d <= 64:
        return 192, 128
    if d <= 96:
        return 128, 128
    if d <= 128:
        return 128, 192
    if d <= 192:
        return 128, 96
    return 128, 64 if local else 128


def _tile_upstream(d, dv, causal, local, fp8, paged_non_tma, softcap, one_wg) -> tuple[int, int]:
    if not fp8:
        if d <= 64:
            if dv == 512:
                return 64, 64
            if dv == 256:
                return 128, 96
            return 192, 128 if causal or local or paged_non_tma else 192
        if d <= 96:
            return 192, 128 if local or paged_non_tma else 144
        if d <= 128:
            return 128, 128 if causal or local or paged_non_tma else 176
        if d <= 192:
            return 128, 96 if paged_non_tma or local else (128 if dv <= 128 else 112)
        return 128, 64 if local else 80
    if d <= 64:
        return 192, 160
    if d <= 96:
        return 192, 128
    if d <= 128:
        return 128, 160 if paged_non_tma else (192 if softcap and local else 224)
    if d <= 192:
        return 128, 128 if (paged_non_tma or softcap) and local else 160
    return 128, 64 if local else 128


def _num_splits_heuristic(total_mblocks, num_sms, n_blocks, m_blocks, size_one_kv_head, causal_or_local,
                          max_splits=128) -> int:
    if total_mblocks >= 0.8 * num_sms:
        size_l2 = 50 * 1024 * 1024
        if size_one_kv_head > size_l2 and m_blocks >= num_sms * 2 and not causal_or_local:
            return min((size_one_kv_head + size_l2 - 1) // size_l2, max_splits)
        return 1
    if n_blocks <= 4:
        return 1
    max_splits = min(max_splits, num_sms, n_blocks)
    efficiency = []
    for splits in range(1, max_splits + 1):
        # FA3 computes in float32; the comparisons below never sit on a rounding edge for these sizes
        waves = total_mblocks * splits / num_sms
        efficiency.append(waves / math.ceil(waves))
    best = max(efficiency)
    return next((s for s, e in enumerate(efficiency, 1) if e >= 0.85 * best), 1)


def _should_pack_gqa(varlen_q, seqlen_q, ratio, block_m) -> bool:
    if varlen_q:
        return True

    def up(a, b):
        return (a + b - 1) // b * b

    return seqlen_q / up(seqlen_q, block_m) < 0.9 * (seqlen_q * ratio / up(seqlen_q * ratio, block_m))


def _schedule(flavour, *, b, s_q, s_k, h, h_k, d, dv, fp8, paged, page_size, knew, leftpad, varlen_q, causal,
              wl, wr, chunk, softcap, num_splits, pack_gqa, sm_margin, paged_flag_for_causal, forward,
              varlen=True) -> Layout:
    """The shared body of both functions, with the places they differ (``forward``, and a forward's
    ``varlen``: ``get_scheduler_metadata`` always assumes it) made explicit."""
    vllm = flavour == "vllm"
    if not varlen and not (vllm and forward):
        raise ValueError("only vLLM's forward is transcribed without per-batch vectors")
    if wl >= s_k - 1:
        wl = -1
    if wr >= s_q - 1:
        wr = -1
    if s_q == 1 and wl == -1 and wr == -1 and chunk == 0 and ((d <= 64 or d > 128) or not paged_flag_for_causal):
        causal = False
    if causal:
        wr = 0
    is_causal = wl < 0 and wr == 0 and chunk == 0
    is_local = (wl >= 0 or wr >= 0 or chunk >= 1) and not is_causal
    if vllm:
        if wl < 0 and wr >= 0:
            wl = s_k - 1
        if wl >= 0 and wr < 0:
            wr = s_q - 1
    else:
        wl = s_k - 1 if wl < 0 else wl
        wr = s_q - 1 if wr < 0 else wr
        if chunk > 0:
            wl, wr = min(wl, chunk - 1), min(wr, chunk - 1)
    d_r = _round_headdim(d)
    dv_r = d_r if dv == d else _round_headdim_v(dv)
    tile = _tile_vllm if vllm else _tile_upstream
    ratio = h // h_k
    one_wg = vllm and (d in (64, 128)) and not is_local and s_q * ratio <= 64
    num_sm = NUM_SM - sm_margin

    tma = paged and not leftpad and not knew and not (vllm and is_local)
    if tma:
        block_m, block_n = tile(d_r, dv_r, is_causal, is_local, fp8, False, softcap, one_wg)
        tma = page_size % block_n == 0 and s_q * ratio > block_m
    non_tma = paged and not tma
    if num_splits <= 0:
        block_m, block_n = tile(d_r, dv_r, is_causal, is_local, fp8, non_tma, softcap, one_wg)
        loaded = s_k if not is_local else max(0, min(s_k, wr + wl + 1 + block_m))
        n_blocks, m_blocks = -(-loaded // block_n), -(-(s_q * ratio) // block_m)
        size_one_kv_head = s_k * (d + dv) * (1 if fp8 else 2)
        # get_num_splits: ``(num_splits_dynamic_ptr ? 1 : b) * h_k * m_blocks``, the pointer set iff varlen
        num_splits = _num_splits_heuristic((1 if varlen else b) * h_k * m_blocks, num_sm, n_blocks, m_blocks,
                                           size_one_kv_head, is_causal or is_local)
    if pack_gqa is None:
        if non_tma or num_splits > 1:
            pack_gqa = True
        elif vllm and ratio == 8 and is_local and d == 64 and dv == d:
            pack_gqa = True
        elif h == h_k:
            pack_gqa = False
        else:
            block_m, _ = tile(d_r, dv_r, is_causal, is_local, fp8, non_tma, softcap, one_wg)
            pack_gqa = _should_pack_gqa(varlen_q, s_q, ratio, block_m)
    if vllm:
        pack_gqa |= num_splits > 1
    dynamic = varlen and b <= MAX_BATCHES_1CTA and num_splits > 1
    sort = not vllm and not is_local
    swizzle = is_causal or is_local
    vectors = (1 + dynamic) if vllm else 2
    size = 1 + (b + 3) // 4 * 4 * (vectors + sort + swizzle)
    if not varlen:
        # mha_fwd without prepare: no prepared vector, a semaphore only for causal/local unsplit calls, and
        # (quirk) a head-swizzle slot that nothing fills (flash_api.cpp:1075-1096)
        size = int((is_causal or is_local) and num_splits == 1) + (b + 3) // 4 * 4 * swizzle
    if varlen and b > MAX_BATCHES_1CTA:
        # the forward forces one split; get_scheduler_metadata does not, but its prepare kernel then runs
        # on several CTAs, which set every batch's split count to 1 (flash_prepare_scheduler.cu)
        num_splits = 1
    if forward:
        # the forward's own prepare runs inside the kernel launcher, with the template's tiles and a
        # PackGQA forced for PagedKVNonTMA / Split kernels
        kd, kdv = _kernel_headdims(d, dv, fp8)
        block_m, block_n = tile(kd, kdv, is_causal, is_local, fp8, non_tma, softcap, one_wg)
        pack_gqa = pack_gqa or non_tma or num_splits > 1
    else:
        block_m, block_n = tile(d_r, dv_r, is_causal, is_local, fp8, non_tma, softcap, one_wg)
    return Layout(size, b, s_q, s_k, num_splits, dynamic, sort, swizzle, bool(pack_gqa), block_m, block_n,
                  is_causal, is_local, wl, wr)


def forward_layout(flavour: str, *, b, s_q, h, h_k, d, dv, fp8=False, page_table_width=None, page_size=1,
                   cache_len=None, max_seqlen_k=None, varlen_k=False, knew=0, leftpad=False, varlen_q=True,
                   causal=False, window=(-1, -1), chunk=0, softcap=False, num_splits=0, pack_gqa=None,
                   sm_margin=0, seqused_k=True) -> Layout:
    """What ``mha_fwd`` schedules with, from the forward's own arguments (``page_table_width`` None:
    non-paged, ``cache_len`` = ``k.size(1)``; ``seqused_k`` False: the call has none)."""
    paged = page_table_width is not None
    if varlen_k or (flavour == "vllm" and max_seqlen_k is not None):
        s_k = max_seqlen_k
    else:
        s_k = page_table_width * page_size if paged else cache_len
    return _schedule(flavour, b=b, s_q=s_q, s_k=s_k, h=h, h_k=h_k, d=d, dv=dv, fp8=fp8, paged=paged,
                     page_size=page_size if paged else 1, knew=knew > 0, leftpad=leftpad, varlen_q=varlen_q,
                     causal=causal, wl=window[0], wr=window[1], chunk=chunk, softcap=softcap, num_splits=num_splits,
                     pack_gqa=pack_gqa, sm_margin=sm_margin, paged_flag_for_causal=paged, forward=True,
                     varlen=varlen_q or varlen_k or seqused_k or leftpad)


def metadata_layout(flavour: str, *, batch_size, max_seqlen_q, max_seqlen_k, num_heads, num_heads_k, headdim,
                    headdim_v, fp8=False, page_size=None, max_seqlen_k_new=0, leftpad=False, varlen_q=True,
                    is_causal=False, window_size_left=-1, window_size_right=-1, attention_chunk=0,
                    has_softcap=False, num_splits=0, pack_gqa=None, sm_margin=0) -> Layout:
    """What ``get_scheduler_metadata`` computes for these arguments (the op's own names)."""
    return _schedule(flavour, b=batch_size, s_q=max_seqlen_q, s_k=max_seqlen_k, h=num_heads, h_k=num_heads_k,
                     d=headdim, dv=headdim_v, fp8=fp8, paged=page_size is not None, page_size=page_size or 1,
                     knew=max_seqlen_k_new > 0, leftpad=leftpad, varlen_q=varlen_q, causal=is_causal,
                     wl=window_size_left, wr=window_size_right, chunk=attention_chunk, softcap=has_softcap,
                     num_splits=num_splits, pack_gqa=pack_gqa, sm_margin=sm_margin,
                     paged_flag_for_causal=page_size is not None, forward=False)
