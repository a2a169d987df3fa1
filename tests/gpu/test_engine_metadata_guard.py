"""The guard on real FA3 builds (vLLM's library, sgl_kernel): engine-style metadata computed for another
``max_seqlen_k`` / window / ``num_splits``, which FA3 alone accepts (only its size is checked) and
computes with differently from its own scheduling, or refuses where the build sizes that metadata
differently (a crash in the engine); through the plugin's wrapper the result must be bitwise equal to
FA3 scheduling itself, with the guard's reason naming the parameter.

Each wrong metadata keeps the layout FA3 alone expects where the build allows (so only parameters recorded at the engine's
``get_scheduler_metadata`` call can prove it wrong) and errs on the side of FEWER splits or blocks than
the forward plans for: a quarter of ``max_seqlen_k``, ``num_splits=2`` where FA3's heuristic picks more,
a 255 window fed to a 1023-window call (the vLLM #54374 class). So FA3 alone reads no split beyond the
ones it allocated: the opposite direction is the engines' illegal-memory-access class, which would take
the whole GPU session down with it. ``num_splits=1`` or a window on a full-attention call changes the
metadata's layout (FA3 alone refuses it by size): the guard's ``size`` reason, tested on CPU.
"""

from __future__ import annotations

import pytest
import torch

from attn_sched_plugin import guard, runtime
from attn_sched_plugin.binding import Binder
from attn_sched_plugin.descriptor import derive_fields
from attn_sched_plugin.interceptor import wrap
from attn_sched_plugin.verify import bitwise_equal

from .cases import sglang_call, vllm_call

pytestmark = pytest.mark.gpu

CASE = dict(mla=False, hd=128, hdv=128, hk=2, h=16, batch=2, q_len=1, page=16, context=8192, live=8192,
            extra_pages=0, max_seqlen_k=8192, causal=True, window=None, softcap=0.0, num_splits=0, sinks=False,
            fp8=False, idle=False, seed=5, varlen_q=True, chunk=0, pack_gqa=None, k_new=False)
# bug -> (the call's case, how the engine's metadata parameters differ from the call's)
BUGS = {
    "max_seqlen_k": (CASE, lambda sig, batch: (sig, batch._replace(max_seqlen_k=batch.max_seqlen_k // 4))),
    "num_splits": (CASE, lambda sig, batch: (sig._replace(num_splits=2), batch)),
    "window": (dict(CASE, window=1023),
               lambda sig, batch: (sig._replace(window_size_left=255, window_size_right=0), batch)),
}


def _engine(build, sig, batch):
    """An engine's get_scheduler_metadata, recorded by the guard: the build's own op, for (sig, batch)."""
    def get_scheduler_metadata(batch_size, max_seqlen_q, max_seqlen_k, num_heads, num_heads_k, headdim, headdim_v,
                               qkv_dtype, page_size, causal, window_size, num_splits, has_softcap=False):
        s = sig._replace(num_heads=num_heads, num_heads_k=num_heads_k, headdim=headdim, headdim_v=headdim_v,
                         qkv_dtype=qkv_dtype, is_causal=causal, window_size_left=window_size[0],
                         window_size_right=window_size[1], num_splits=num_splits, has_softcap=has_softcap)
        return build.fa3.provider.compute(s, batch._replace(batch_size=batch_size, max_seqlen_q=max_seqlen_q,
                                                        max_seqlen_k=max_seqlen_k, page_size=page_size))

    return guard.recording(get_scheduler_metadata)


@pytest.mark.parametrize("bug", sorted(BUGS))
@pytest.mark.parametrize("which", ["vllm", "sgl_kernel"])
def test_wrong_engine_metadata_is_replaced(request, record, which, bug):
    build = request.getfixturevalue("vllm_build" if which == "vllm" else "sgl_kernel_build")
    case, differ = BUGS[bug]
    kwargs = (vllm_call if which == "vllm" else sglang_call)(case)
    sig, batch = derive_fields(Binder(build.forward, build.fa3.convention).fields((), kwargs),
                               build.fa3.provider.seqlen_k_from_call)
    wrong_sig, wrong_batch = differ(sig, batch)
    wrong = _engine(build, wrong_sig, wrong_batch)(
        wrong_batch.batch_size, wrong_batch.max_seqlen_q, wrong_batch.max_seqlen_k, wrong_sig.num_heads,
        wrong_sig.num_heads_k, wrong_sig.headdim, wrong_sig.headdim_v, wrong_sig.qkv_dtype, wrong_batch.page_size,
        wrong_sig.is_causal, (wrong_sig.window_size_left, wrong_sig.window_size_right), wrong_sig.num_splits)
    plain = build.forward(**kwargs)
    try:
        alone = build.forward(**kwargs, scheduler_metadata=wrong)
        torch.cuda.synchronize()
        accepted, differs = True, not bitwise_equal(alone, plain)
    except RuntimeError:  # FA3's size check refused it: a layout change (sort / swizzle vectors)
        accepted, differs = False, None
    before = guard.counts(build.fa3.provider.name)
    runtime.new_step()
    guarded = wrap(build.forward, build.fa3)(**kwargs, scheduler_metadata=wrong)
    torch.cuda.synchronize()
    after = guard.counts(build.fa3.provider.name)
    replaced = {reason: n - before.get(reason, 0) for reason, n in after.items() if n > before.get(reason, 0)}
    record(build=which, bug=bug, fa3_alone_accepts=accepted, fa3_alone_differs=differs,
           guard_equal=bitwise_equal(guarded, plain), guard_replaced=replaced)
    assert bitwise_equal(guarded, plain)
    # without the guard the wrong metadata does harm: FA3 alone computes differently with it (silent
    # corruption) or refuses it (a crash: vLLM 0.26's library sizes the window case's metadata differently)
    assert differs or not accepted, "FA3 alone accepted this metadata and computed the same: the case shows no bug"
    assert replaced == {f"guard_{bug}": 1}
