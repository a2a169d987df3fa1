"""Property-based: random call shapes through the wrapped strict reference, both conventions.

For every example the wrapped call (two "layers", so the second reuses) must be bitwise equal to
the unwrapped reference, every call must get injected metadata (no pass-through at all: a
metadata mismatch would show up as ``fa3_rejected`` after the strict reference raised), and
the metadata must be computed once. (``pack_gqa=False`` is declined by design: test_core_derive.)
"""

from __future__ import annotations

import torch
from core_calls import kvcache_call, varlen_call
from core_state import reset_plugin_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attn_sched_plugin import interceptor, runtime
from attn_sched_plugin.verify import bitwise_equal
from tests.reference import fa3_reference as ref

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

FA_KV = interceptor.wrap(ref.flash_attn_with_kvcache, ref.build())
FA_VARLEN = interceptor.wrap(ref.flash_attn_varlen_func, ref.vllm_build())

heads = st.tuples(st.sampled_from([1, 2]), st.sampled_from([1, 2, 4, 8])).map(lambda t: (t[0] * t[1], t[0]))
windows = st.one_of(st.just((-1, -1)), st.tuples(st.integers(-1, 80), st.integers(-1, 4)))
common = dict(
    causal=st.booleans(), window_size=windows, softcap=st.sampled_from([0.0, 5.0]),
    num_splits=st.sampled_from([0, 1, 3]), dtype=st.sampled_from([torch.bfloat16, torch.float16]),
    seed=st.integers(0, 2**16),
)


def _check(wrapped, plain, call) -> None:
    reset_plugin_state()
    expected = plain(**call)
    start = ref.COUNTERS["metadata"]
    outs = [wrapped(**call) for _ in range(2)]
    tally = runtime.state().tally
    assert not tally.passthrough, tally.passthrough
    assert (tally.injected, tally.computed, ref.COUNTERS["metadata"] - start) == (2, 1, 1)
    for out in outs:
        assert bitwise_equal(out, expected)


@SETTINGS
@given(b=st.integers(1, 8), s_q=st.integers(1, 4), hk=heads, head=st.sampled_from(["64", "128", "mla"]),
       layout=st.sampled_from(["paged", "nonpaged", "varlen_q"]), page_size=st.sampled_from([1, 4, 16]),
       pages=st.integers(1, 4), pack_gqa=st.sampled_from([None, True]), chunk=st.sampled_from([0, 0, 8]),
       return_lse=st.booleans(), **common)
def test_kvcache_wrapped_equals_reference(b, s_q, hk, head, layout, page_size, pages, pack_gqa, chunk, return_lse,
                                          causal, window_size, softcap, num_splits, dtype, seed):
    h, h_k = hk
    call = kvcache_call(
        b=b, s_q=s_q, h=h, h_k=h_k, d=64 if head == "mla" else int(head), mla=head == "mla",
        page_size=None if layout == "nonpaged" else page_size, pages_per_seq=pages, s_k=min(64, page_size * pages),
        varlen_q=layout == "varlen_q", dtype=dtype, seed=seed, causal=causal, window_size=window_size,
        softcap=softcap, num_splits=num_splits, pack_gqa=pack_gqa, attention_chunk=chunk, return_softmax_lse=return_lse,
    )
    _check(FA_KV, ref.flash_attn_with_kvcache, call)


@SETTINGS
@given(b=st.integers(1, 8), s_q=st.integers(1, 4), hk=heads, d=st.sampled_from([64, 128]),
       paged=st.booleans(), page_size=st.sampled_from([1, 4, 16]), pages=st.integers(1, 4),
       max_k_slack=st.integers(0, 8), **common)
def test_varlen_wrapped_equals_reference(b, s_q, hk, d, paged, page_size, pages, max_k_slack, causal, window_size,
                                         softcap, num_splits, dtype, seed):
    h, h_k = hk
    call = varlen_call(b=b, s_q=s_q, h=h, h_k=h_k, d=d, page_size=page_size if paged else None,
                       pages_per_seq=pages, dtype=dtype, seed=seed, causal=causal, window_size=list(window_size),
                       softcap=softcap, num_splits=num_splits)
    call["max_seqlen_k"] += max_k_slack  # FA3 takes it as given (varlen-k) or ignores it (paged)
    _check(FA_VARLEN, ref.flash_attn_varlen_func, call)
