"""What vLLM's own metadata does when it was computed for other parameters than the call's
(the inconsistencies ``adapters.vllm.native_mismatch`` counts), on real FA3: vLLM-style metadata
(live max length, no ``has_softcap``) fed to the forward, against FA3 alone and the plugin."""

from __future__ import annotations

import pytest
import torch

from attn_sched_plugin import runtime
from attn_sched_plugin.conventions import Binder
from attn_sched_plugin.descriptor import derive_fields
from attn_sched_plugin.interceptor import wrap
from attn_sched_plugin.verify import bitwise_equal

from .cases import vllm_call

pytestmark = pytest.mark.gpu


def _case(window, softcap):
    # every sequence shorter than the window, block table 4096 tokens wide: early decode of a
    # uniform sliding-window model (vLLM keeps its own metadata there)
    return dict(build="vllm", mla=False, hd=128, hdv=128, hk=2, h=16, batch=8, q_len=1, page=16, context=4096,
                causal=True, window=window, softcap=softcap, num_splits=0, sinks=False, fp8=False, idle=False,
                seed=11)


@pytest.mark.parametrize("inconsistency,window,softcap", [
    ("window_normalisation", 1023, 0.0),
    ("has_softcap", None, 30.0),
])
def test_vllm_style_metadata_against_fa3_alone(vllm_build, record, inconsistency, window, softcap):
    kwargs = vllm_call(_case(window, softcap))
    kwargs["seqused_k"].copy_(torch.randint(100, 900, (8,), dtype=torch.int32))
    live_max = int(kwargs["seqused_k"].max())
    sig, batch = derive_fields(Binder(vllm_build.forward, vllm_build.convention).fields((), kwargs))
    # what vLLM's builder passes: the live max as max_seqlen_k, and never has_softcap
    native = vllm_build.provider.compute(sig._replace(has_softcap=False), batch._replace(max_seqlen_k=live_max))
    plain = vllm_build.forward(**kwargs)
    try:
        with_native = vllm_build.forward(**kwargs, scheduler_metadata=native)
        outcome = "equal" if bitwise_equal(with_native, plain) else "differs"
    except RuntimeError as exc:
        outcome = f"raises: {str(exc).splitlines()[0][-100:]}"
    runtime.new_step()
    ours = wrap(vllm_build.forward, vllm_build.provider, vllm_build.convention)(**kwargs)
    torch.cuda.synchronize()
    record(inconsistency=inconsistency, native_metadata=outcome, live_max=live_max, plugin_equal=bitwise_equal(ours, plain))
    assert bitwise_equal(ours, plain)
