"""Builders of small FA3-style calls on CPU for the core tests (deterministic, seeded)."""

from __future__ import annotations

import torch

from attn_sched_plugin.binding import Binder, Convention
from attn_sched_plugin.descriptor import derive_fields


def i32(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32)


def _rand(gen: torch.Generator, *shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(*shape, generator=gen).to(dtype)


def _lengths(gen: torch.Generator, b: int, lo: int, hi: int) -> list[int]:
    return torch.randint(lo, hi + 1, (b,), generator=gen).tolist()


def _cu(lengths: list[int]) -> torch.Tensor:
    return i32([0] + torch.tensor(lengths).cumsum(0).tolist())


def _paged_cache(gen, b, pages_per_seq, page_size, h_k, d, dv, dtype):
    """k/v caches of b * pages_per_seq + 1 pages and a shuffled page table (page widths as FA3 sees them)."""
    num_pages = b * pages_per_seq + 1
    k = _rand(gen, num_pages, page_size, h_k, d, dtype=dtype)
    v = _rand(gen, num_pages, page_size, h_k, dv, dtype=dtype)
    table = torch.randperm(num_pages, generator=gen)[: b * pages_per_seq].to(torch.int32).view(b, pages_per_seq)
    return k, v, table.contiguous()


def kvcache_call(b: int = 2, s_q: int = 1, h: int = 4, h_k: int = 2, d: int = 64, dv: int | None = None,
                 page_size: int | None = 4, pages_per_seq: int = 4, s_k: int = 16, varlen_q: bool = False,
                 mla: bool = False, dtype: torch.dtype = torch.bfloat16, seed: int = 0,
                 q_lens: list[int] | None = None, **extra) -> dict:
    """Arguments of ``flash_attn_with_kvcache`` (SGLang / upstream names).

    ``page_size=None``: non-paged cache of length ``s_k``. ``varlen_q``: q packed with ``cu_seqlens_q``.
    ``mla``: q/k dim 64, v dim 512 and ``qv`` (DeepSeek MLA as SGLang calls FA3).
    """
    gen = torch.Generator().manual_seed(seed)
    if mla:
        d, dv = 64, 512
    dv = d if dv is None else dv
    if page_size is None:
        k = _rand(gen, b, s_k, h_k, d, dtype=dtype)
        v = _rand(gen, b, s_k, h_k, dv, dtype=dtype)
        table, cap = None, s_k
    else:
        k, v, table = _paged_cache(gen, b, pages_per_seq, page_size, h_k, d, dv, dtype)
        cap = pages_per_seq * page_size
    call = dict(k_cache=k, v_cache=v, cache_seqlens=i32(_lengths(gen, b, min(s_q, cap), cap)), page_table=table)
    if varlen_q:
        q_lens = _lengths(gen, b, 1, s_q) if q_lens is None else q_lens
        total = sum(q_lens)
        call.update(q=_rand(gen, total, h, d, dtype=dtype), cu_seqlens_q=_cu(q_lens), max_seqlen_q=s_q)
        if mla:
            call["qv"] = _rand(gen, total, h, dv, dtype=dtype)
    else:
        call["q"] = _rand(gen, b, s_q, h, d, dtype=dtype)
        if mla:
            call["qv"] = _rand(gen, b, s_q, h, dv, dtype=dtype)
    call.update(extra)
    return call


def varlen_call(b: int = 2, s_q: int = 1, h: int = 4, h_k: int = 2, d: int = 64, page_size: int | None = 4,
                pages_per_seq: int = 4, max_seqlen_k: int | None = None, dtype: torch.dtype = torch.bfloat16,
                seed: int = 0, **extra) -> dict:
    """Arguments of vLLM's ``flash_attn_varlen_func`` (FA3 path).

    Paged (``block_table`` + ``seqused_k``) like vLLM's decode/prefill, or with ``page_size=None``
    varlen-k (``cu_seqlens_k`` + ``seqused_k``, ``max_seqlen_k`` as given).
    """
    gen = torch.Generator().manual_seed(seed)
    q_lens = _lengths(gen, b, 1, s_q)
    call = dict(q=_rand(gen, sum(q_lens), h, d, dtype=dtype), cu_seqlens_q=_cu(q_lens), max_seqlen_q=s_q)
    if page_size is None:
        k_lens = _lengths(gen, b, s_q, max(s_q, 16))
        call.update(k=_rand(gen, sum(k_lens), h_k, d, dtype=dtype), v=_rand(gen, sum(k_lens), h_k, d, dtype=dtype),
                    cu_seqlens_k=_cu(k_lens), seqused_k=i32(k_lens),
                    max_seqlen_k=max(k_lens) if max_seqlen_k is None else max_seqlen_k)
    else:
        k, v, table = _paged_cache(gen, b, pages_per_seq, page_size, h_k, d, d, dtype)
        cap = pages_per_seq * page_size
        lens = _lengths(gen, b, min(s_q, cap), cap)
        call.update(k=k, v=v, block_table=table, seqused_k=i32(lens),
                    max_seqlen_k=max(lens) if max_seqlen_k is None else max_seqlen_k)
    call.update(extra)
    return call


def derive_call(fn, convention: Convention, seqlen_k_from_call: bool = False, **kwargs):
    """``descriptor.derive_fields`` of a call to ``fn`` under ``convention`` (as the interceptor runs it for
    a build whose forward does / does not take ``max_seqlen_k`` from the call)."""
    return derive_fields(Binder(fn, convention).fields((), kwargs), seqlen_k_from_call)
