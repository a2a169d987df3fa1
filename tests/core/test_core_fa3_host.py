"""The plugin's derivation against FA3's own host heuristics (``tests/reference/fa3_host.py``).

For a call, ``get_scheduler_metadata`` fed the plugin's parameters must lay out and fill the
metadata exactly as the call's own forward schedules itself (same size, splits, PackGQA, tiles,
causal/local normalisation). FA3 itself only compares sizes; these tests compare everything.
Issues 11 and 15: vLLM's fork schedules with the call's ``max_seqlen_k`` (the live maximum),
not the block-table width, which the plugin used to derive; the size then differed whenever the
split heuristic (driven by KV heads, q-heads per KV head and lengths) chose differently.
"""

from __future__ import annotations

import pytest
import torch
from core_calls import derive_call, i32
from hypothesis import given, settings
from hypothesis import strategies as st

from attn_sched_plugin.binding import KVCACHE, VARLEN
from attn_sched_plugin.errors import Decline
from tests.reference.fa3_host import forward_layout, metadata_layout

# (q heads, kv heads, head dim, v head dim, window) FA3 refused for the plugin on an H100 (issue 11), the
# real models named there and their TP shards, and the Gemma-3-12B-like model of issue 15
FORMERLY_REJECTED = [
    (5, 5, 64, 64, 200), (7, 1, 128, 128, None), (9, 3, 256, 256, None), (24, 4, 256, 256, None),
    (28, 4, 64, 64, None), (30, 5, 192, 128, None), (28, 4, 128, 128, None), (14, 2, 128, 128, None),
    (40, 8, 128, 128, None), (10, 2, 128, 128, None), (40, 10, 128, 128, None), (20, 5, 128, 128, None),
    (16, 8, 256, 256, 1023), (16, 8, 256, 256, None),
]


def _vllm_call(h, h_k, d, dv, window, b, q_len, live_max, width_pages=512, page=16, softcap=0.0, num_splits=0,
               dtype=torch.bfloat16):
    """vLLM's FA3 call: block table max_model_len wide (8192 tokens), the live maximum as max_seqlen_k."""
    total_q = b * q_len
    lens = [max(q_len, live_max - i) for i in range(b)]
    return dict(
        q=torch.zeros(total_q, h, d, dtype=dtype), k=torch.zeros(width_pages + 1, page, h_k, d, dtype=dtype),
        v=torch.zeros(width_pages + 1, page, h_k, dv, dtype=dtype), max_seqlen_q=q_len,
        cu_seqlens_q=i32([i * q_len for i in range(b + 1)]), max_seqlen_k=live_max, seqused_k=i32(lens),
        block_table=torch.zeros(b, width_pages, dtype=torch.int32), causal=True,
        window_size=None if window is None else [window, 0], softcap=softcap, num_splits=num_splits, fa_version=3,
    )


def _forward_of_vllm_call(call) -> tuple:
    q, k, v, table = call["q"], call["k"], call["v"], call["block_table"]
    window = call["window_size"] or (-1, -1)
    return forward_layout(
        "vllm", b=table.shape[0], s_q=call["max_seqlen_q"], h=q.shape[1], h_k=k.shape[2], d=q.shape[2],
        dv=v.shape[3], fp8=q.dtype == torch.float8_e4m3fn, page_table_width=table.shape[1], page_size=k.shape[1],
        max_seqlen_k=call["max_seqlen_k"], causal=call["causal"], window=tuple(window), softcap=call["softcap"] > 0,
        num_splits=call["num_splits"])


def _metadata_of(sig, batch, flavour: str):
    return metadata_layout(
        flavour, batch_size=batch.batch_size, max_seqlen_q=batch.max_seqlen_q, max_seqlen_k=batch.max_seqlen_k,
        num_heads=sig.num_heads, num_heads_k=sig.num_heads_k, headdim=sig.headdim, headdim_v=sig.headdim_v,
        fp8=sig.qkv_dtype == torch.float8_e4m3fn, page_size=batch.page_size,
        max_seqlen_k_new=batch.max_seqlen_k_new, varlen_q=batch.cu_seqlens_q is not None,
        is_causal=sig.is_causal, window_size_left=sig.window_size_left, window_size_right=sig.window_size_right,
        attention_chunk=sig.attention_chunk, has_softcap=sig.has_softcap, num_splits=sig.num_splits,
        pack_gqa=sig.pack_gqa, sm_margin=sig.sm_margin)


def _plugin_layout(ref, call, seqlen_k_from_call: bool):
    sig, batch = derive_call(ref.flash_attn_varlen_func, VARLEN, seqlen_k_from_call=seqlen_k_from_call, **call)
    return _metadata_of(sig, batch, "vllm")


@pytest.mark.parametrize("shape", FORMERLY_REJECTED, ids=lambda s: "{}-{}-{}x{}-w{}".format(*s))
def test_formerly_rejected_shapes_now_schedule_like_vllms_forward(ref, shape):
    h, h_k, d, dv, window = shape
    for b in (1, 3, 8, 64):
        for q_len in (1, 2, 5, 17):
            for live_max in (max(q_len, 1), 885, 4000):  # capture dummy runs, early decode, long context
                call = _vllm_call(h, h_k, d, dv, window, b, q_len, live_max)
                assert _plugin_layout(ref, call, True) == _forward_of_vllm_call(call), (b, q_len, live_max)


def test_the_old_derivation_changes_the_metadata_size_for_these_shapes(ref):
    """The mechanism FA3 reported: with the table width (8192) the split heuristic splits, with vLLM's live
    maximum it does not, so one per-batch vector (the dynamic splits) more or less; the size check fires.
    This is also what makes the test above able to fail."""
    differing = []
    for h, h_k, d, dv, window in FORMERLY_REJECTED:
        for b, q_len, live_max in ((1, 1, 1), (8, 1, 885), (3, 5, 200)):
            call = _vllm_call(h, h_k, d, dv, window, b, q_len, live_max)
            old, forward = _plugin_layout(ref, call, False), _forward_of_vllm_call(call)
            if old.size != forward.size:
                differing.append((h, h_k, d, window, b, q_len, live_max))
    gemma_capture = (16, 8, 256, 1023, 1, 1, 1)  # issue 15: the PIECEWISE capture pass, window 1023
    assert gemma_capture in differing and len(differing) >= len(FORMERLY_REJECTED)


HEADS = st.sampled_from([(1, 1), (2, 1), (3, 1), (5, 5), (6, 1), (7, 1), (8, 2), (9, 3), (10, 2), (12, 4),
                         (14, 2), (16, 2), (20, 5), (24, 4), (28, 4), (30, 5), (32, 8), (40, 8), (40, 10),
                         (48, 6), (56, 8), (64, 8), (96, 8), (128, 8)])
DIMS = st.sampled_from([(64, 64), (96, 96), (128, 128), (192, 128), (256, 256), (64, 512), (64, 128), (80, 80)])


@settings(max_examples=400, deadline=None)
@given(heads=HEADS, dims=DIMS, b=st.integers(1, 1100), q_len=st.integers(1, 17), live=st.integers(1, 9000),
       page=st.sampled_from([1, 16, 32, 64, 128, 256]), extra_pages=st.integers(0, 40),
       window=st.sampled_from([None, 0, 8, 127, 200, 1023, 4095, 10_000]), causal=st.booleans(),
       softcap=st.booleans(), num_splits=st.sampled_from([0, 0, 1, 3]), fp8=st.booleans())
def test_vllm_fork_random_calls_schedule_like_the_forward(ref, heads, dims, b, q_len, live, page, extra_pages,
                                                          window, causal, softcap, num_splits, fp8):
    (h, h_k), (d, dv) = heads, dims
    width = -(-max(live, q_len) // page) + extra_pages  # page tables wider than needed
    call = _vllm_call(h, h_k, d, dv, window, min(b, 8), q_len, max(live, q_len), width_pages=width, page=page,
                      softcap=30.0 if softcap else 0.0, num_splits=num_splits,
                      dtype=torch.float8_e4m3fn if fp8 and dims[0] == dims[1] else torch.bfloat16)
    call["causal"] = causal
    if b > 8:  # the batch-size dependent branches (dynamic split up to 992 batches) without big tensors
        call["cu_seqlens_q"] = i32([i * q_len for i in range(b + 1)])
        call["seqused_k"] = i32([max(live, q_len)] * b)
        call["block_table"] = torch.zeros(b, width, dtype=torch.int32)
    forward = _forward_of_vllm_call(call)
    try:
        plugin = _plugin_layout(ref, call, True)
    except Decline as exc:
        # the one class the plugin declines: FA3's two functions disagree on the tiles themselves
        assert exc.reason == "headdim_v_tiles" and d <= 64 < dv <= 192
        assert (forward.block_m, forward.block_n) != _tiles_get_scheduler_metadata_uses(call, forward)
        return
    assert plugin == forward


def _tiles_get_scheduler_metadata_uses(call, forward) -> tuple[int, int]:
    """The tiles get_scheduler_metadata sizes for the call's exact parameters (headdim_v as given)."""
    q, k, v = call["q"], call["k"], call["v"]
    layout = metadata_layout(
        "vllm", batch_size=forward.batch, max_seqlen_q=forward.seqlen_q, max_seqlen_k=forward.seqlen_k,
        num_heads=q.shape[1], num_heads_k=k.shape[2], headdim=q.shape[2], headdim_v=v.shape[3],
        fp8=q.dtype == torch.float8_e4m3fn, page_size=k.shape[1], is_causal=call["causal"],
        window_size_left=(call["window_size"] or (-1, -1))[0], window_size_right=(call["window_size"] or (-1, -1))[1],
        has_softcap=call["softcap"] > 0, num_splits=call["num_splits"])
    return layout.block_m, layout.block_n


@settings(max_examples=300, deadline=None)
@given(heads=HEADS, dims=DIMS, b=st.integers(1, 8), q_len=st.integers(1, 17), s_k=st.integers(1, 4096),
       page=st.sampled_from([None, 1, 16, 64, 256]), extra_pages=st.integers(0, 40),
       window=st.sampled_from([(-1, -1), (8, 0), (127, 0), (1023, 0), (200, 3), (-1, 5)]),
       chunk=st.sampled_from([0, 0, 64, 1024]), causal=st.booleans(), varlen_q=st.booleans(),
       num_splits=st.sampled_from([0, 0, 2]), pack_gqa=st.sampled_from([None, None, True]))
def test_upstream_kvcache_random_calls_schedule_like_the_forward(ref, heads, dims, b, q_len, s_k, page, extra_pages,
                                                                 window, chunk, causal, varlen_q, num_splits, pack_gqa):
    """sgl_kernel / fa3-fwd surface (``flash_attn_with_kvcache``) against the upstream forward."""
    (h, h_k), (d, dv) = heads, dims
    s_k = max(s_k, q_len)
    if page is None:
        k = torch.zeros(b, s_k, h_k, d, dtype=torch.bfloat16)
        v = torch.zeros(b, s_k, h_k, dv, dtype=torch.bfloat16)
        table, width = None, None
    else:
        width = -(-s_k // page) + extra_pages
        k = torch.zeros(width + 1, page, h_k, d, dtype=torch.bfloat16)
        v = torch.zeros(width + 1, page, h_k, dv, dtype=torch.bfloat16)
        table = torch.zeros(b, width, dtype=torch.int32)
    call = dict(k_cache=k, v_cache=v, cache_seqlens=i32([s_k] * b), page_table=table, causal=causal,
                window_size=window, attention_chunk=chunk, num_splits=num_splits, pack_gqa=pack_gqa)
    if varlen_q:
        call.update(q=torch.zeros(b * q_len, h, d, dtype=torch.bfloat16), max_seqlen_q=q_len,
                    cu_seqlens_q=i32([i * q_len for i in range(b + 1)]))
    else:
        call["q"] = torch.zeros(b, q_len, h, d, dtype=torch.bfloat16)
    forward = forward_layout("upstream", b=b, s_q=q_len, h=h, h_k=h_k, d=d, dv=dv, page_table_width=width,
                             page_size=page or 1, cache_len=s_k, varlen_q=varlen_q, causal=causal, window=window,
                             chunk=chunk, num_splits=num_splits, pack_gqa=pack_gqa)
    try:
        sig, batch = derive_call(ref.flash_attn_with_kvcache, KVCACHE, **call)
    except Decline as exc:
        assert exc.reason == "headdim_v_tiles" and d <= 64 < dv <= 192
        return
    assert _metadata_of(sig, batch, "upstream") == forward


# vLLM's fork, flash-attention #161/#162: get_scheduler_metadata hard-codes a varlen forward (prepared vector,
# semaphore whenever sm90). Calls whose q is not varlen (4-D, no cu_seqlens_q) still schedule alike when they
# carry seqused_k, which makes mha_fwd varlen too; without any per-batch vector the two never agree.

def _nonvarlen_q_call(h, h_k, d, dv, b, q_len, s_k, page, window, causal, num_splits, seqused_k=True):
    """A 4-D q through vLLM's flash_attn_varlen_func (cu_seqlens_q None): paged with seqused_k, or
    (``seqused_k`` False) a dense (b, s_k) cache, which is how mha_fwd is called without any varlen vector."""
    if seqused_k:
        width = -(-s_k // page)
        k = torch.zeros(width + 1, page, h_k, d, dtype=torch.bfloat16)
        v = torch.zeros(width + 1, page, h_k, dv, dtype=torch.bfloat16)
        paged = dict(seqused_k=i32([s_k] * b), block_table=torch.zeros(b, width, dtype=torch.int32))
    else:
        k = torch.zeros(b, s_k, h_k, d, dtype=torch.bfloat16)
        v = torch.zeros(b, s_k, h_k, dv, dtype=torch.bfloat16)
        width, paged = None, {}
    call = dict(q=torch.zeros(b, q_len, h, d, dtype=torch.bfloat16), k=k, v=v, max_seqlen_q=q_len,
                cu_seqlens_q=None, max_seqlen_k=s_k, causal=causal, window_size=window, num_splits=num_splits,
                fa_version=3, **paged)
    forward = forward_layout("vllm", b=b, s_q=q_len, h=h, h_k=h_k, d=d, dv=dv, page_table_width=width,
                             page_size=page if seqused_k else 1, cache_len=s_k, max_seqlen_k=s_k, varlen_q=False,
                             causal=causal, window=tuple(window or (-1, -1)), num_splits=num_splits,
                             seqused_k=seqused_k)
    return call, forward


NONVARLEN = dict(heads=HEADS, dims=DIMS, b=st.integers(1, 8), q_len=st.integers(1, 17), s_k=st.integers(1, 4096),
                 page=st.sampled_from([1, 16, 64, 256]), window=st.sampled_from([None, (8, 0), (127, 0), (1023, 0)]),
                 causal=st.booleans(), num_splits=st.sampled_from([0, 0, 1, 3]))


@settings(max_examples=300, deadline=None)
@given(**NONVARLEN)
def test_vllm_fork_nonvarlen_q_with_seqused_k_schedules_like_the_forward(ref, heads, dims, b, q_len, s_k, page, window,
                                                                        causal, num_splits):
    (h, h_k), (d, dv) = heads, dims
    call, forward = _nonvarlen_q_call(h, h_k, d, dv, b, q_len, max(s_k, q_len), page, window, causal, num_splits)
    try:
        plugin = _plugin_layout(ref, call, True)
    except Decline as exc:
        assert exc.reason == "headdim_v_tiles" and d <= 64 < dv <= 192
        return
    assert plugin == forward


@settings(max_examples=300, deadline=None)
@given(**NONVARLEN)
def test_vllm_fork_call_without_seqused_k_is_declined_its_metadata_would_never_fit(
        ref, heads, dims, b, q_len, s_k, page, window, causal, num_splits):
    """Remove the ``no_seqused_k`` decline and the derivation proceeds: the pytest.raises below fails."""
    (h, h_k), (d, dv) = heads, dims
    s_k = max(s_k, q_len)
    call, forward = _nonvarlen_q_call(h, h_k, d, dv, b, q_len, s_k, page, window, causal, num_splits,
                                      seqused_k=False)
    wl, wr = window or (-1, -1)
    # what get_scheduler_metadata returns for the call's own parameters (it needs a seqused_k: any will do)
    metadata = metadata_layout("vllm", batch_size=b, max_seqlen_q=q_len, max_seqlen_k=s_k, num_heads=h,
                               num_heads_k=h_k, headdim=d, headdim_v=dv, varlen_q=False, is_causal=causal,
                               window_size_left=wl, window_size_right=wr, num_splits=num_splits)
    assert metadata.size != forward.size  # CHECK_SHAPE fails, or (size 0) the forward ignores it
    with pytest.raises(Decline, match="^no_seqused_k$"):
        derive_call(ref.flash_attn_varlen_func, VARLEN, seqlen_k_from_call=True, **call)


def test_the_5_vs_9_report_is_this_mismatch():
    """flash-attention #161: "scheduler_metadata dimension 0 must have size 5, got 9" for one sequence."""
    kw = dict(b=1, s_q=1, h=32, h_k=8, d=128, dv=128, cache_len=4096, varlen_q=False, causal=True,
              window=(127, 0), num_splits=1)
    forward = forward_layout("vllm", seqused_k=False, **kw)
    metadata = metadata_layout("vllm", batch_size=1, max_seqlen_q=1, max_seqlen_k=4096, num_heads=32, num_heads_k=8,
                               headdim=128, headdim_v=128, varlen_q=False, is_causal=True, window_size_left=127,
                               window_size_right=0, num_splits=1)
    assert (forward.size, metadata.size) == (5, 9)
    assert forward_layout("vllm", seqused_k=True, **kw).size == 9  # with seqused_k the forward is varlen: agrees
