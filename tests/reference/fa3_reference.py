"""A CPU REFERENCE of FlashAttention-3's forward and scheduler metadata, for tests only.

It is NOT FA3 and is never used outside the test suite. It exists so CPU tests can run the
plugin end to end:

* ``torch.ops.attn_sched_ref.fwd`` and ``.get_scheduler_metadata`` are real torch ops with the
  upstream FA3 schemas (plus ``sinks``), so the plugin binds them by schema like a real build.
* The attention math is exact (float32 on CPU, deterministic): paged / non-paged / varlen KV,
  GQA, causal (bottom-right aligned), sliding windows, attention chunks, softcap, sinks, MLA
  ``q_v``, appended ``k_new``.
* Metadata is STRICTER than FA3's: FA3 only checks the tensor's size, while this reference
  re-derives the scheduling state from the forward's own arguments, exactly as ``mha_fwd`` does
  (transcribed from hopper/flash_api.cpp, independently of the plugin's descriptor), and raises
  if the metadata was computed for any other state or for other batch-tensor contents, or for a
  head-dim pair whose forward tiles differ from get_scheduler_metadata's (q/k dim <= 64 with
  64 < v dim <= 192: the forward runs its 64 x 256 kernel).
* Two flavours of the forward op, as the real builds differ: ``attn_sched_ref`` (upstream and
  sgl-attn: paged KV schedules with the page-table width x page size) and ``attn_sched_ref_vllm``
  (vLLM's fork: the call's ``max_seqlen_k`` whenever it is given). The vLLM surface
  ``flash_attn_varlen_func`` calls the latter, as vLLM's wrapper calls its own fork.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter

import torch

NAMESPACE = "attn_sched_ref"
VLLM_NAMESPACE = "attn_sched_ref_vllm"
MAGIC = 0x5A3F
COUNTERS: Counter = Counter()  # "metadata": computations, "prepare": forwards that scheduled themselves
_REGISTRY: dict[int, tuple] = {}
_ids = itertools.count(1)

FWD_SCHEMA = (
    "fwd(Tensor q, Tensor k, Tensor v, Tensor? k_new=None, Tensor? v_new=None, Tensor? q_v=None, "
    "Tensor? out=None, Tensor? cu_seqlens_q=None, Tensor? cu_seqlens_k=None, Tensor? cu_seqlens_k_new=None, "
    "Tensor? seqused_q=None, Tensor? seqused_k=None, int? max_seqlen_q=None, int? max_seqlen_k=None, "
    "Tensor? page_table=None, Tensor? kv_batch_idx=None, Tensor? leftpad_k=None, Tensor? rotary_cos=None, "
    "Tensor? rotary_sin=None, Tensor? seqlens_rotary=None, Tensor? q_descale=None, Tensor? k_descale=None, "
    "Tensor? v_descale=None, float? softmax_scale=None, bool is_causal=False, int window_size_left=-1, "
    "int window_size_right=-1, int attention_chunk=0, float softcap=0.0, bool is_rotary_interleaved=False, "
    "Tensor? scheduler_metadata=None, int num_splits=0, bool? pack_gqa=None, int sm_margin=0, "
    "Tensor? sinks=None) -> (Tensor, Tensor)"
)
METADATA_SCHEMA = (
    "get_scheduler_metadata(int batch_size, int max_seqlen_q, int max_seqlen_k, int num_heads, int num_heads_k, "
    "int headdim, int headdim_v, ScalarType qkv_dtype, Tensor seqused_k, Tensor? cu_seqlens_q=None, "
    "Tensor? cu_seqlens_k=None, Tensor? cu_seqlens_k_new=None, Tensor? seqused_q=None, Tensor? leftpad_k=None, "
    "int? page_size=None, int max_seqlen_k_new=0, bool is_causal=False, int window_size_left=-1, "
    "int window_size_right=-1, int attention_chunk=0, bool has_softcap=False, int num_splits=0, "
    "bool? pack_gqa=None, int sm_margin=0) -> Tensor"
)


def _contents(*tensors) -> tuple:
    return tuple(None if t is None else tuple(t.tolist()) for t in tensors)


def scheduling_state(b, s_q, s_k, h, h_k, d, dv, dtype, paged, page_size, s_k_new, causal, wl, wr, chunk,
                     softcap, num_splits, pack_gqa, sm_margin, seqused_k, cu_q, cu_k, seqused_q, leftpad) -> tuple:
    """What FA3's scheduler depends on, normalised as in mha_fwd / mha_fwd_get_scheduler_metadata."""
    if wl >= s_k - 1:
        wl = -1
    if wr >= s_q - 1:
        wr = -1
    if s_q == 1 and wl == -1 and wr == -1 and chunk == 0 and ((d <= 64 or d > 128) or not paged):
        causal = False
    if causal:
        wr = 0
    is_causal = wl < 0 and wr == 0 and chunk == 0
    is_local = (wl >= 0 or wr >= 0 or chunk >= 1) and not is_causal
    if wl < 0:
        wl = s_k - 1
    if wr < 0:
        wr = s_q - 1
    if chunk > 0:
        wl, wr = min(wl, chunk - 1), min(wr, chunk - 1)
    return (b, s_q, s_k, h, h_k, d, dv, dtype, paged, page_size if paged else 1, s_k_new > 0, s_k_new,
            is_causal, is_local, wl, wr, chunk, softcap, num_splits, pack_gqa, sm_margin,
            _contents(seqused_k, cu_q, cu_k, seqused_q, leftpad))


def _get_scheduler_metadata(batch_size, max_seqlen_q, max_seqlen_k, num_heads, num_heads_k, headdim, headdim_v,
                            qkv_dtype, seqused_k, cu_seqlens_q=None, cu_seqlens_k=None, cu_seqlens_k_new=None,
                            seqused_q=None, leftpad_k=None, page_size=None, max_seqlen_k_new=0, is_causal=False,
                            window_size_left=-1, window_size_right=-1, attention_chunk=0, has_softcap=False,
                            num_splits=0, pack_gqa=None, sm_margin=0):
    if cu_seqlens_k_new is not None:
        raise NotImplementedError("reference FA3: cu_seqlens_k_new")
    COUNTERS["metadata"] += 1
    state = scheduling_state(
        batch_size, max_seqlen_q, max_seqlen_k, num_heads, num_heads_k, headdim, headdim_v, qkv_dtype,
        page_size is not None, page_size, max_seqlen_k_new, is_causal, window_size_left, window_size_right,
        attention_chunk, bool(has_softcap), num_splits, pack_gqa, sm_margin, seqused_k, cu_seqlens_q,
        cu_seqlens_k, seqused_q, leftpad_k)
    ident = next(_ids)
    _REGISTRY[ident] = state
    return torch.tensor([MAGIC, ident], dtype=torch.int32, device=seqused_k.device)


def _check_metadata(metadata: torch.Tensor, expected: tuple, vllm: bool) -> None:
    """FA3's own checks, with its own messages (hopper/flash_api.cpp: CHECK_SHAPE and the dtype check;
    vLLM's stable-ABI fork words CHECK_SHAPE per dimension), then the reference's stricter one."""
    if metadata.dim() != 1 or metadata.numel() != 2 or int(metadata.view(-1)[0]) != MAGIC:
        if not vllm:
            raise RuntimeError("scheduler_metadata must have shape (metadata_size)")
        if metadata.dim() != 1:
            raise RuntimeError(f"scheduler_metadata must have 1 dimensions, got {metadata.dim()}")
        raise RuntimeError(f"scheduler_metadata dimension 0 must have size 2, got {metadata.size(0)}")
    if metadata.dtype != torch.int32:
        raise RuntimeError("scheduler_metadata must have dtype int32")
    got = _REGISTRY.get(int(metadata[1]))
    if got != expected:
        diff = [i for i, (a, b) in enumerate(zip(got or (), expected)) if a != b]
        # a real FA3 does not notice (it reads wrong split counts): the reference raises an error no
        # refusal check takes for FA3's own, so a wrong reuse fails the test loudly
        raise RuntimeError(f"reference FA3: metadata computed for other parameters (fields {diff})")


def _fwd(q, k, v, k_new=None, v_new=None, q_v=None, out=None, cu_seqlens_q=None, cu_seqlens_k=None,
         cu_seqlens_k_new=None, seqused_q=None, seqused_k=None, max_seqlen_q=None, max_seqlen_k=None,
         page_table=None, kv_batch_idx=None, leftpad_k=None, rotary_cos=None, rotary_sin=None,
         seqlens_rotary=None, q_descale=None, k_descale=None, v_descale=None, softmax_scale=None,
         is_causal=False, window_size_left=-1, window_size_right=-1, attention_chunk=0, softcap=0.0,
         is_rotary_interleaved=False, scheduler_metadata=None, num_splits=0, pack_gqa=None, sm_margin=0,
         sinks=None, *, seqlen_k_from_call=False):
    if k_new is None:
        cu_seqlens_k_new = None  # like mha_fwd, which reads it only inside `if (k_new_.has_value())`
    for name, value in (("kv_batch_idx", kv_batch_idx), ("leftpad_k", leftpad_k), ("rotary_cos", rotary_cos),
                        ("cu_seqlens_k_new", cu_seqlens_k_new), ("seqused_q", seqused_q)):
        if value is not None:
            raise NotImplementedError(f"reference FA3: {name}")
    # --- sizes, as mha_fwd derives them from its own arguments ---
    varlen_q, varlen_k, paged = cu_seqlens_q is not None, cu_seqlens_k is not None, page_table is not None
    b = cu_seqlens_q.shape[0] - 1 if varlen_q else q.shape[0]
    s_q = max_seqlen_q if varlen_q else q.shape[1]
    page_size = k.shape[1] if paged else 1
    if varlen_k or (seqlen_k_from_call and max_seqlen_k is not None):
        s_k = max_seqlen_k
    else:
        s_k = page_table.shape[1] * page_size if paged else k.shape[1]
    h, d, h_k, dv = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    s_k_new = 0 if k_new is None else k_new.shape[1]
    is_varlen = varlen_q or varlen_k or seqused_k is not None
    if is_varlen:
        state = scheduling_state(b, s_q, s_k, h, h_k, d, dv, q.dtype, paged, page_size, s_k_new, is_causal,
                                 window_size_left, window_size_right, attention_chunk, softcap > 0, num_splits,
                                 pack_gqa, sm_margin, seqused_k, cu_seqlens_q, cu_seqlens_k, None, None)
        if scheduler_metadata is not None:
            if d <= 64 < dv <= 192:
                raise RuntimeError(f"reference FA3: hdim {d} / hdim_v {dv} runs tiles get_scheduler_metadata "
                                   "does not size for")
            _check_metadata(scheduler_metadata, state, vllm=seqlen_k_from_call)
        else:
            COUNTERS["prepare"] += 1
    COUNTERS["fwd"] += 1
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)

    out_rows, lse_rows = [], []
    for i in range(b):
        qi = q[cu_seqlens_q[i]:cu_seqlens_q[i + 1]] if varlen_q else q[i]
        qvi = None if q_v is None else (q_v[cu_seqlens_q[i]:cu_seqlens_q[i + 1]] if varlen_q else q_v[i])
        ki, vi = _keys(i, k, v, page_table, cu_seqlens_k, page_size)
        n_k = int(seqused_k[i]) if seqused_k is not None else ki.shape[0]
        if k_new is not None:  # append in place, then attend to the longer cache
            _append(i, n_k, k, v, k_new[i], v_new[i], page_table, page_size)
            ki, vi = _keys(i, k, v, page_table, cu_seqlens_k, page_size)
            n_k += s_k_new
        o, lse = _attend(qi, qvi, ki[:n_k], vi[:n_k], h // h_k, scale, is_causal, window_size_left,
                         window_size_right, attention_chunk, softcap, sinks)
        out_rows.append(o.to(q.dtype if q.dtype != torch.float8_e4m3fn else torch.bfloat16))
        lse_rows.append(lse)
    result = torch.cat(out_rows) if varlen_q else torch.stack(out_rows)
    lse = torch.cat(lse_rows, dim=1) if varlen_q else torch.stack(lse_rows)
    if out is not None:
        out.copy_(result)  # FA3 writes the caller's buffer; returning a fresh tensor keeps the op alias-free
    return result, lse


def _keys(i, k, v, page_table, cu_seqlens_k, page_size):
    if page_table is not None:
        pages = page_table[i]
        return k[pages].reshape(-1, *k.shape[2:]), v[pages].reshape(-1, *v.shape[2:])
    if cu_seqlens_k is not None:
        lo, hi = int(cu_seqlens_k[i]), int(cu_seqlens_k[i + 1])
        return k[lo:hi], v[lo:hi]
    return k[i], v[i]


def _append(i, start, k, v, k_new_i, v_new_i, page_table, page_size):
    for j in range(k_new_i.shape[0]):
        pos = start + j
        if page_table is not None:
            page, off = int(page_table[i, pos // page_size]), pos % page_size
            k[page, off], v[page, off] = k_new_i[j], v_new_i[j]
        else:
            k[i, pos], v[i, pos] = k_new_i[j], v_new_i[j]


def _attend(q, qv, k, v, group, scale, causal, wl, wr, chunk, softcap, sinks):
    """One sequence: q (s_q, h, d), k (n_k, h_k, d), v (n_k, h_k, dv) -> out (s_q, h, dv), lse (h, s_q)."""
    s_q, n_k = q.shape[0], k.shape[0]
    kf = k.float().repeat_interleave(group, dim=1)
    vf = v.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), kf)
    if qv is not None:
        scores = scores + torch.einsum("qhd,khd->hqk", qv.float(), vf)
    scores = scores * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    pos_q = torch.arange(s_q).unsqueeze(1) + (n_k - s_q)  # bottom-right alignment
    pos_k = torch.arange(n_k).unsqueeze(0)
    allowed = torch.ones(s_q, n_k, dtype=torch.bool)
    if causal:
        wr = 0
    if wl >= 0:
        allowed &= pos_k >= pos_q - wl
    if wr >= 0:
        allowed &= pos_k <= pos_q + wr
    if chunk > 0:
        allowed &= torch.div(pos_k, chunk, rounding_mode="floor") == torch.div(pos_q, chunk, rounding_mode="floor")
    scores = scores.masked_fill(~allowed, float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True)
    if sinks is not None:
        row_max = torch.maximum(row_max, sinks.float().view(-1, 1, 1))
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    weights = torch.exp(scores - row_max)
    denom = weights.sum(dim=-1, keepdim=True)
    if sinks is not None:
        denom = denom + torch.exp(sinks.float().view(-1, 1, 1) - row_max)
    out = torch.einsum("hqk,khd->qhd", weights / torch.where(denom > 0, denom, torch.ones_like(denom)), vf)
    lse = torch.where(denom.squeeze(-1) > 0, torch.log(denom.squeeze(-1)) + row_max.squeeze(-1),
                      torch.full_like(row_max.squeeze(-1), float("inf")))
    return out, lse


def _library(namespace: str, fwd) -> torch.library.Library:
    lib = torch.library.Library(namespace, "DEF")
    lib.define(FWD_SCHEMA)
    lib.define(METADATA_SCHEMA)
    lib.impl("fwd", fwd, "CPU")
    lib.impl("get_scheduler_metadata", _get_scheduler_metadata, "CPU")
    return lib


_libs = (_library(NAMESPACE, _fwd), _library(VLLM_NAMESPACE, functools.partial(_fwd, seqlen_k_from_call=True)))
_ops = getattr(torch.ops, NAMESPACE)
_ops_vllm = getattr(torch.ops, VLLM_NAMESPACE)


# --- Python surfaces with the engines' argument names -------------------------------------------

def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, qv=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, page_table=None,
                            cu_seqlens_q=None, cu_seqlens_k_new=None, max_seqlen_q=None, rotary_seqlens=None,
                            q_descale=None, k_descale=None, v_descale=None, softmax_scale=None, causal=False,
                            window_size=(-1, -1), attention_chunk=0, softcap=0.0, rotary_interleaved=True,
                            scheduler_metadata=None, num_splits=0, pack_gqa=None, sm_margin=0,
                            return_softmax_lse=False, sinks=None, ver=3):
    """Upstream / SGLang ``flash_attn_with_kvcache`` (SGLang's ``ver`` and ``sinks`` included)."""
    if ver != 3:
        raise NotImplementedError("reference FA3 only implements ver=3")
    if softmax_scale is None:
        softmax_scale = (q.shape[-1] + (qv.shape[-1] if qv is not None else 0)) ** (-0.5)
    out, lse = _ops.fwd(
        q, k_cache, v_cache, k, v, qv, None, cu_seqlens_q, None, cu_seqlens_k_new, None, cache_seqlens,
        max_seqlen_q, None, page_table, cache_batch_idx, cache_leftpad, rotary_cos, rotary_sin, rotary_seqlens,
        q_descale, k_descale, v_descale, softmax_scale, causal, window_size[0], window_size[1], attention_chunk,
        softcap, rotary_interleaved, scheduler_metadata, num_splits, pack_gqa, sm_margin, sinks)
    return (out, lse) if return_softmax_lse else out


def flash_attn_varlen_func(q, k, v, max_seqlen_q, cu_seqlens_q, max_seqlen_k, cu_seqlens_k=None, seqused_k=None,
                           q_v=None, dropout_p=0.0, softmax_scale=None, causal=False, window_size=None, softcap=0.0,
                           alibi_slopes=None, deterministic=False, return_attn_probs=False, block_table=None,
                           return_softmax_lse=False, out=None, scheduler_metadata=None, q_descale=None,
                           k_descale=None, v_descale=None, num_splits=0, fa_version=3, s_aux=None):
    """vLLM ``flash_attn_varlen_func`` (``fa_version=3`` path; pack_gqa/sm_margin hard-coded like vLLM),
    calling the vLLM-flavoured forward (``max_seqlen_k`` from the call)."""
    if fa_version != 3:
        raise NotImplementedError("reference FA3 only implements fa_version=3")
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** (-0.5)
    window = (-1, -1) if window_size is None else window_size
    result, lse = _ops_vllm.fwd(
        q, k, v, None, None, q_v, out, cu_seqlens_q, cu_seqlens_k, None, None, seqused_k, max_seqlen_q,
        max_seqlen_k, block_table, None, None, None, None, None, q_descale, k_descale, v_descale, softmax_scale,
        causal, window[0], window[1], 0, softcap, True, scheduler_metadata, num_splits, None, 0, s_aux)
    return (result, lse) if return_softmax_lse else result


def get_scheduler_metadata(batch_size, max_seqlen_q, max_seqlen_k, num_heads_q, num_heads_kv, headdim,
                           cache_seqlens, qkv_dtype=torch.bfloat16, headdim_v=None, cu_seqlens_q=None,
                           cu_seqlens_k_new=None, cache_leftpad=None, page_size=None, max_seqlen_k_new=0,
                           causal=False, window_size=(-1, -1), attention_chunk=0, has_softcap=False, num_splits=0,
                           pack_gqa=None, sm_margin=0):
    """Upstream-named ``get_scheduler_metadata`` (what engines call to precompute)."""
    return _ops.get_scheduler_metadata(
        batch_size, max_seqlen_q, max_seqlen_k, num_heads_q, num_heads_kv, headdim,
        headdim if headdim_v is None else headdim_v, qkv_dtype, cache_seqlens, cu_seqlens_q, None,
        cu_seqlens_k_new, None, cache_leftpad, page_size, max_seqlen_k_new, causal, window_size[0],
        window_size[1], attention_chunk, has_softcap, num_splits, pack_gqa, sm_margin)


@functools.lru_cache(maxsize=1)
def provider():
    """The plugin's provider for the upstream-flavoured reference build (bound by schema, like a real build)."""
    from attn_sched_plugin.providers import Provider

    return Provider(f"torch.ops.{NAMESPACE}", NAMESPACE)


@functools.lru_cache(maxsize=1)
def vllm_provider():
    """The provider for the vLLM-flavoured reference build: its forward takes ``max_seqlen_k`` from the call."""
    from attn_sched_plugin.providers import Provider

    return Provider(f"torch.ops.{VLLM_NAMESPACE}", VLLM_NAMESPACE, seqlen_k_from_call=True)


def build():
    """The upstream-flavoured reference build, called through ``flash_attn_with_kvcache``."""
    from attn_sched_plugin.binding import KVCACHE
    from attn_sched_plugin.providers import Build

    return Build(provider(), KVCACHE)


@functools.lru_cache(maxsize=1)
def vllm_build():
    """The vLLM-flavoured reference build, called through vLLM's ``flash_attn_varlen_func``."""
    from attn_sched_plugin.binding import VARLEN
    from attn_sched_plugin.providers import Build

    return Build(vllm_provider(), VARLEN)
