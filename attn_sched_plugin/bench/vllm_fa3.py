"""vLLM's ``flash_attn_varlen_func`` (FA3 branch; vLLM 0.33 and 0.34 make the same op call), for running
vLLM's FA3 library alone.

The GPU machine cannot import the vllm package, only its ``_vllm_fa3_C`` library; this is the same
argument-to-op mapping as ``vllm/vllm_flash_attn/flash_attn_interface.py``, so the plugin's VARLEN
convention is exercised exactly as inside vLLM.
"""

from __future__ import annotations

import torch


def flash_attn_varlen_func(q, k, v, max_seqlen_q, cu_seqlens_q, max_seqlen_k, cu_seqlens_k=None, seqused_k=None,
                           q_v=None, dropout_p=0.0, softmax_scale=None, causal=False, window_size=None,
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False,
                           block_table=None, return_softmax_lse=False, out=None, scheduler_metadata=None,
                           q_descale=None, k_descale=None, v_descale=None, num_splits=0, fa_version=3,
                           s_aux=None, cp_world_size=1, cp_rank=0, cp_tot_seqused_k=None):
    assert fa_version == 3 and alibi_slopes is None and dropout_p == 0.0
    if softmax_scale is None:
        softmax_scale = q.shape[-1] ** (-0.5)
    window = (-1, -1) if window_size is None else (window_size[0], window_size[1])
    out, softmax_lse, _, _ = torch.ops._vllm_fa3_C.fwd(
        q, k, v, None, None, q_v, out, cu_seqlens_q, cu_seqlens_k, None, None, seqused_k, max_seqlen_q,
        max_seqlen_k, block_table, None, None, None, None, None, q_descale, k_descale, v_descale, softmax_scale,
        causal, window[0], window[1], softcap, True, scheduler_metadata, num_splits, None, 0, s_aux,
        cp_world_size, cp_rank, cp_tot_seqused_k,
    )
    return (out, softmax_lse) if return_softmax_lse else out
