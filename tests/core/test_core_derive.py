"""descriptor.derive through the conventions: every parameter FA3's forward derives, and every decline."""

from __future__ import annotations

import pytest
import torch
from core_calls import derive_call, i32, kvcache_call, varlen_call

from attn_sched_plugin import interceptor
from attn_sched_plugin.binding import KVCACHE, VARLEN
from attn_sched_plugin.errors import Decline
from attn_sched_plugin.providers import ARGUMENTS, BUILDS, provider_from_library
from attn_sched_plugin.verify import bitwise_equal


def kv(ref, **kwargs):
    return derive_call(ref.flash_attn_with_kvcache, KVCACHE, **kwargs)


def vl(ref, **kwargs):
    """As the interceptor derives a call to vLLM's surface for vLLM's own fork."""
    return derive_call(ref.flash_attn_varlen_func, VARLEN, seqlen_k_from_call=True, **kwargs)


def declined(fn, call) -> str:
    with pytest.raises(Decline) as info:
        fn(**call)
    return info.value.reason


# --- sizes ------------------------------------------------------------------------------------


def test_batch_and_max_seqlen_q_from_q_when_not_varlen(ref):
    _, batch = kv(ref, **kvcache_call(b=3, s_q=2, max_seqlen_q=7))  # the stray arg is ignored, like FA3
    assert (batch.batch_size, batch.max_seqlen_q) == (3, 2)
    assert batch.cu_seqlens_q is None


def test_batch_and_max_seqlen_q_from_cu_seqlens_q_when_varlen(ref):
    call = kvcache_call(b=3, s_q=4, varlen_q=True, q_lens=[1, 4, 2])
    call["max_seqlen_q"] = 9  # FA3 takes the argument as given, not the packed lengths' maximum
    _, batch = kv(ref, **call)
    assert batch.batch_size == 3 and call["q"].shape[0] == 7
    assert batch.max_seqlen_q == 9
    assert batch.cu_seqlens_q is call["cu_seqlens_q"]


def test_paged_max_seqlen_k_is_table_width_times_page_size_not_live_max(ref):
    call = kvcache_call(b=2, page_size=4, pages_per_seq=5, cache_seqlens=i32([3, 7]))
    _, batch = kv(ref, **call)
    assert batch.max_seqlen_k == 20 and batch.page_size == 4


def test_nonpaged_max_seqlen_k_is_cache_length(ref):
    _, batch = kv(ref, **kvcache_call(b=2, page_size=None, s_k=24, cache_seqlens=i32([1, 2])))
    assert batch.max_seqlen_k == 24 and batch.page_size is None


def test_varlen_k_max_seqlen_k_is_the_argument(ref):
    call = varlen_call(b=3, page_size=None, max_seqlen_k=50)
    _, batch = vl(ref, **call)
    assert batch.max_seqlen_k == 50 and batch.page_size is None
    assert batch.cu_seqlens_k is call["cu_seqlens_k"]


def test_vllm_fork_paged_takes_max_seqlen_k_from_the_call(ref):
    # vLLM passes the live maximum while its block table is max_model_len wide; its fork schedules with
    # the argument (issue 15: deriving the table width made FA3 reject the metadata for Gemma-3)
    _, batch = vl(ref, **varlen_call(b=2, page_size=16, pages_per_seq=3, max_seqlen_k=5))
    assert batch.max_seqlen_k == 5 and batch.page_size == 16


def test_upstream_paged_ignores_max_seqlen_k_argument(ref):
    call = varlen_call(b=2, page_size=16, pages_per_seq=3, max_seqlen_k=5)
    _, batch = derive_call(ref.flash_attn_varlen_func, VARLEN, seqlen_k_from_call=False, **call)
    assert batch.max_seqlen_k == 48 and batch.page_size == 16


def test_provider_rule_follows_the_build():
    assert BUILDS["vllm_flash_attn"].provider.seqlen_k_from_call
    assert provider_from_library("/nonexistent/_vllm_fa3_C.abi3.so", "_vllm_fa3_C").seqlen_k_from_call
    assert not any(BUILDS[b].provider.seqlen_k_from_call for b in ("sgl_kernel", "fa3_fwd", "flash_attn_3"))


def test_seqused_k_is_the_callers_tensor(ref):
    call = kvcache_call()
    _, batch = kv(ref, **call)
    assert batch.seqused_k is call["cache_seqlens"]


# --- signature --------------------------------------------------------------------------------


def test_heads_and_head_dims(ref):
    sig, _ = kv(ref, **kvcache_call(h=8, h_k=2, d=128))
    assert (sig.num_heads, sig.num_heads_k, sig.headdim, sig.headdim_v) == (8, 2, 128, 128)


def test_mla_headdim_v_from_v_cache(ref):
    sig, _ = kv(ref, **kvcache_call(h=16, h_k=1, mla=True))
    assert (sig.headdim, sig.headdim_v) == (64, 512)


@pytest.mark.parametrize("d, dv, shared", [(64, 96, False), (64, 128, False), (32, 192, False), (64, 256, True),
                                           (64, 512, True), (192, 128, True), (64, 32, True)])
def test_headdim_pairs_whose_forward_tiles_differ_are_declined(ref, tally, d, dv, shared):
    """q/k dim <= 64 with 64 < v dim <= 192: FA3 runs its 64 x 256 kernel, get_scheduler_metadata sizes
    tiles for v dim rounded up; the strict reference raises if metadata reaches such a call."""
    wrapped = interceptor.wrap(ref.flash_attn_with_kvcache, ref.build())
    call = kvcache_call(d=d, dv=dv)
    assert bitwise_equal(wrapped(**call), ref.flash_attn_with_kvcache(**call))
    assert (tally().injected, dict(tally().passthrough)) == ((1, {}) if shared else (0, {"headdim_v_tiles": 1}))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float8_e4m3fn])
def test_dtype(ref, dtype):
    sig, _ = kv(ref, **kvcache_call(dtype=dtype))
    assert sig.qkv_dtype == dtype


def test_defaults_are_neutral(ref):
    sig, batch = kv(ref, **kvcache_call())
    assert (sig.is_causal, sig.window_size_left, sig.window_size_right, sig.attention_chunk, sig.has_softcap,
            sig.num_splits, sig.pack_gqa, sig.sm_margin) == (False, -1, -1, 0, False, 0, None, 0)
    assert batch.max_seqlen_k_new == 0 and batch.leftpad_k is None


@pytest.mark.parametrize(
    "kwargs, field, value",
    [
        ({"causal": True}, "is_causal", True),
        ({"window_size": (5, 0)}, "window_size_left", 5),
        ({"window_size": (5, 3)}, "window_size_right", 3),
        ({"window_size": (1000, -1)}, "window_size_left", 1000),  # raw: get_scheduler_metadata normalises
        ({"attention_chunk": 8}, "attention_chunk", 8),
        ({"softcap": 30.0}, "has_softcap", True),
        ({"softcap": 0.0}, "has_softcap", False),
        ({"num_splits": 3}, "num_splits", 3),
        ({"pack_gqa": True}, "pack_gqa", True),
        ({"sm_margin": 4}, "sm_margin", 4),
    ],
)
def test_signature_argument(ref, kwargs, field, value):
    sig, _ = kv(ref, **kvcache_call(**kwargs))
    assert getattr(sig, field) == value


def test_vllm_signature_fixed_by_its_wrapper(ref):
    sig, _ = vl(ref, **varlen_call(causal=True, window_size=[7, 0], softcap=5.0, num_splits=2))
    assert (sig.is_causal, sig.window_size_left, sig.window_size_right, sig.has_softcap, sig.num_splits) == (
        True, 7, 0, True, 2)
    assert (sig.pack_gqa, sig.sm_margin, sig.attention_chunk) == (None, 0, 0)


def test_k_new_length(ref):
    call = kvcache_call(b=2, h_k=2, d=64)
    call.update(k=torch.zeros(2, 3, 2, 64, dtype=torch.bfloat16), v=torch.zeros(2, 3, 2, 64, dtype=torch.bfloat16))
    _, batch = kv(ref, **call)
    assert batch.max_seqlen_k_new == 3


def test_cu_seqlens_k_new_without_k_new_is_ignored_like_fa3(ref):
    """SGLang passes ``cu_seqlens_k_new=cu_seqlens_k`` on every decode/extend call with ``k=None``.

    FA3's mha_fwd reads ``cu_seqlens_k_new`` only inside ``if (k_new_.has_value())``, so the
    forward schedules exactly as without it; declining here would pass every SGLang call through.
    """
    call = kvcache_call(b=2, cu_seqlens_k_new=i32([0, 5, 9]))
    _, batch = kv(ref, **call)
    assert batch.max_seqlen_k_new == 0


def test_leftpad(ref):
    pad = i32([1, 0])
    _, batch = kv(ref, **kvcache_call(b=2, cache_leftpad=pad))
    assert batch.leftpad_k is pad


def test_scheduler_arguments_carry_every_field(ref):
    sig, batch = kv(ref, **kvcache_call(b=3, s_q=2, causal=True, softcap=1.0, num_splits=1))
    args = dict(zip(ARGUMENTS, (*sig, *batch, None)))  # as Provider.compute reads them
    assert args["batch_size"] == 3 and args["max_seqlen_q"] == 2 and args["is_causal"] is True
    assert args["has_softcap"] is True and args["num_splits"] == 1 and args["cu_seqlens_k_new"] is None
    assert set(args) == set(sig._fields) | set(batch._fields) | {"cu_seqlens_k_new"}


# --- declines in derive -----------------------------------------------------------------------


def _inference_seqlens():
    with torch.inference_mode():
        return i32([3, 5])


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"cache_seqlens": None}, "no_seqused_k"),
        ({"cache_seqlens": 5}, "seqused_k_not_tensor"),
        ({"cache_batch_idx": i32([1, 0])}, "kv_batch_idx"),
        ({"rotary_cos": torch.zeros(16, 32), "rotary_sin": torch.zeros(16, 32)}, "rotary_cos"),
        ({"k": torch.zeros(2, 1, 2, 64, dtype=torch.bfloat16), "v": torch.zeros(2, 1, 2, 64, dtype=torch.bfloat16),
          "cu_seqlens_k_new": i32([0, 1, 2])}, "cu_seqlens_k_new"),
        ({"cache_seqlens": torch.tensor([3, 5], dtype=torch.int64)}, "seqused_k_layout"),
        ({"cache_seqlens": i32([3, 5, 7])}, "seqused_k_layout"),
        ({"cache_seqlens": i32([3, 9, 5, 9])[::2]}, "seqused_k_layout"),
        ({"cache_seqlens": i32([[3, 5]])}, "seqused_k_layout"),
        ({"cache_seqlens": _inference_seqlens()}, "inference_tensor"),
        ({"cache_leftpad": torch.tensor([0, 0], dtype=torch.int64)}, "leftpad_k_layout"),
        ({"page_table": i32([0, 1, 2])}, "page_table_layout"),
        ({"window_size": (1, 2, 3)}, "window_size"),
        ({"window_size": (1.5, 0)}, "window_size_not_int"),
        ({"num_splits": 2.0}, "num_splits_not_int"),
        ({"attention_chunk": True}, "attention_chunk_not_int"),
        ({"pack_gqa": False}, "pack_gqa_false"),  # FA3's forward may force PackGQA where metadata keeps False
    ],
)
def test_kvcache_declines(ref, change, reason):
    call = kvcache_call(b=2)
    call.update(change)
    assert declined(lambda **c: kv(ref, **c), call) == reason


def test_q_rank_without_cu_seqlens_q(ref):
    call = kvcache_call(b=2)
    call["q"] = call["q"][:, 0]  # 3-D q but no cu_seqlens_q
    assert declined(lambda **c: kv(ref, **c), call) == "q_rank"


def test_q_rank_with_cu_seqlens_q(ref):
    call = kvcache_call(b=2, cu_seqlens_q=i32([0, 1, 2]), max_seqlen_q=1)  # 4-D q with cu_seqlens_q
    assert declined(lambda **c: kv(ref, **c), call) == "q_rank"


def test_cu_seqlens_q_layout(ref):
    call = kvcache_call(b=2, s_q=2, varlen_q=True)
    call["cu_seqlens_q"] = call["cu_seqlens_q"].long()
    assert declined(lambda **c: kv(ref, **c), call) == "cu_seqlens_q_layout"


def test_max_seqlen_q_must_be_int_when_varlen(ref):
    call = kvcache_call(b=2, s_q=2, varlen_q=True)
    call["max_seqlen_q"] = None
    assert declined(lambda **c: kv(ref, **c), call) == "max_seqlen_q_not_int"


def test_k_rank(ref):
    call = kvcache_call(b=2)
    call["k_cache"] = call["k_cache"][0]
    assert declined(lambda **c: kv(ref, **c), call) == "k_rank"


def test_varlen_k_with_block_table_declined(ref):
    call = varlen_call(b=2, page_size=None)
    call["block_table"] = i32([[0], [1]])
    assert declined(lambda **c: vl(ref, **c), call) == "k_rank"


def test_varlen_cu_seqlens_k_layout(ref):
    call = varlen_call(b=2, page_size=None)
    call["cu_seqlens_k"] = call["cu_seqlens_k"][:-1]
    assert declined(lambda **c: vl(ref, **c), call) == "cu_seqlens_k_layout"


def test_vllm_without_seqused_k_declined(ref):
    call = varlen_call(b=2, page_size=None)
    call["seqused_k"] = None
    assert declined(lambda **c: vl(ref, **c), call) == "no_seqused_k"


def test_dtype_mismatch(ref):
    call = kvcache_call(b=2)
    call["k_cache"] = call["k_cache"].half()
    assert declined(lambda **c: kv(ref, **c), call) == "dtype_mismatch"


# --- declines in the interceptor (before derive) ----------------------------------------------


def _reason(wrapped, call, tally) -> str:
    before = dict(tally().passthrough)
    wrapped(**call)
    after = tally().passthrough
    changed = [r for r in after if after[r] != before.get(r, 0)]
    assert len(changed) == 1, after
    assert tally().injected == 0
    return changed[0]


def test_not_fa3_for_sglang_ver(ref, tally):
    calls = []

    def fa(q, k_cache, v_cache, cache_seqlens=None, page_table=None, scheduler_metadata=None, ver=3):
        calls.append(scheduler_metadata)

    wrapped = interceptor.wrap(fa, ref.build())
    call = kvcache_call()
    call = {n: call[n] for n in ("q", "k_cache", "v_cache", "cache_seqlens", "page_table")}
    assert _reason(wrapped, dict(call, ver=4), tally) == "not_fa3"
    assert calls == [None]


def test_not_fa3_for_vllm_fa_version(ref, tally):
    calls = []

    def fa(q, k, v, max_seqlen_q, cu_seqlens_q, max_seqlen_k, seqused_k=None, block_table=None,
           scheduler_metadata=None, fa_version=3):
        calls.append(scheduler_metadata)

    wrapped = interceptor.wrap(fa, ref.vllm_build())
    call = varlen_call()
    assert _reason(wrapped, dict(call, fa_version=2), tally) == "not_fa3"
    assert calls == [None]


@pytest.mark.parametrize("change, reason", [({"dropout_p": 0.1}, "arg_dropout_p"),
                                            ({"alibi_slopes": torch.zeros(4)}, "arg_alibi_slopes")])
def test_foreign_non_default_argument_declined(ref, tally, change, reason):
    wrapped = interceptor.wrap(ref.flash_attn_varlen_func, ref.vllm_build())
    call = varlen_call(**change)
    wrapped(**call)  # the reference ignores them; what matters is that no metadata was injected
    assert tally().passthrough == {reason: 1}


def test_foreign_argument_at_default_is_fine(ref, tally):
    wrapped = interceptor.wrap(ref.flash_attn_varlen_func, ref.vllm_build())
    wrapped(**varlen_call(dropout_p=0.0, alibi_slopes=None))
    assert tally().injected == 1 and not tally().passthrough


def test_unknown_kwargs_declined(ref, tally):
    def fa(q, k_cache, v_cache, cache_seqlens=None, page_table=None, scheduler_metadata=None, **kwargs):
        return kwargs

    wrapped = interceptor.wrap(fa, ref.build())
    call = kvcache_call()
    call = {n: call[n] for n in ("q", "k_cache", "v_cache", "cache_seqlens", "page_table")}
    assert _reason(wrapped, dict(call, mystery=1), tally) == "arg_mystery"
