"""vLLM's own metadata, computed the way its builder does, against FA3 alone, on vLLM's real FA3 library.

vLLM's builder passes the live maximum length as ``max_seqlen_k`` to ``get_scheduler_metadata`` AND
to the forward, and vLLM's fork schedules with the call's ``max_seqlen_k``: the two agree, also for
a sliding window wider than every live sequence (an earlier version of this test called the forward
with the block-table span instead, as upstream FA3 would derive, and wrongly reported vLLM's metadata
as stale). The builder never passes ``has_softcap``; in vLLM's fork that changes the tiles of fp8
local attention only. The plugin must be bitwise equal to FA3 alone in every case.
"""

from __future__ import annotations

import pytest
import torch

from attn_sched_plugin import runtime
from attn_sched_plugin.binding import Binder
from attn_sched_plugin.descriptor import derive_fields
from attn_sched_plugin.interceptor import wrap
from attn_sched_plugin.verify import bitwise_equal

from .cases import vllm_call

pytestmark = pytest.mark.gpu


def _case(window, softcap):
    # every sequence shorter than the window, block table 4096 tokens wide: early decode of a
    # uniform sliding-window model (vLLM keeps its own metadata there)
    return dict(build="vllm", mla=False, hd=128, hdv=128, hk=2, h=16, batch=8, q_len=1, page=16, context=4096,
                live=4096, extra_pages=0, max_seqlen_k=4096, causal=True, window=window, softcap=softcap,
                num_splits=0, sinks=False, fp8=False, idle=False, seed=11)


@pytest.mark.parametrize("window,softcap", [(1023, 0.0), (None, 30.0)])
def test_vllm_builder_metadata_against_fa3_alone(vllm_build, record, window, softcap):
    kwargs = vllm_call(_case(window, softcap))
    kwargs["seqused_k"].copy_(torch.randint(100, 900, (8,), dtype=torch.int32))
    kwargs["max_seqlen_k"] = live_max = int(kwargs["seqused_k"].max())  # what vLLM passes the forward
    sig, batch = derive_fields(Binder(vllm_build.forward, vllm_build.fa3.convention).fields((), kwargs),
                               vllm_build.fa3.provider.seqlen_k_from_call)
    assert batch.max_seqlen_k == live_max
    native = vllm_build.fa3.provider.compute(sig._replace(has_softcap=False), batch)  # the builder's call
    plain = vllm_build.forward(**kwargs)
    with_native = vllm_build.forward(**kwargs, scheduler_metadata=native)
    runtime.new_step()
    ours = wrap(vllm_build.forward, vllm_build.fa3)(**kwargs)
    torch.cuda.synchronize()
    native_equal = bitwise_equal(with_native, plain)
    record(window=window, softcap=softcap, live_max=live_max, native_equal=native_equal,
           plugin_equal=bitwise_equal(ours, plain))
    assert bitwise_equal(ours, plain)
    assert native_equal  # bf16: has_softcap does not change vLLM's tiles; max_seqlen_k agrees
