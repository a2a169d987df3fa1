"""The guard on engine-supplied metadata, against the reference FA3 (strict: it refuses metadata computed
for any other scheduling state than the forward derives, so "refused without the guard" is the
engine bug, and "equal to FA3 alone" is the exact replacement)."""

from __future__ import annotations

import functools

import pytest
import torch
from core_calls import kvcache_call

from attn_sched_plugin import activation, guard, interceptor, runtime, switches
from attn_sched_plugin.verify import bitwise_equal

CALL = dict(b=2, s_q=1, page_size=4, pages_per_seq=4, causal=True)


@pytest.fixture
def engine(ref):
    """An engine's get_scheduler_metadata (upstream names), recorded by the guard."""
    return guard.recording(ref.get_scheduler_metadata)


def _engine_metadata(engine, call, **over):
    """What an engine computes for ``call``, with ``over`` standing for its bug."""
    args = dict(batch_size=2, max_seqlen_q=1, max_seqlen_k=16, num_heads_q=4, num_heads_kv=2, headdim=64,
                cache_seqlens=call["cache_seqlens"], qkv_dtype=torch.bfloat16, page_size=4, causal=True)
    args.update(over)
    return engine(**args)


def _guard(mode: str) -> None:
    switches._current = switches.Switches({"ATTN_SCHED_GUARD": mode})


@pytest.mark.parametrize("bug, reason", [
    ({"window_size": (7, 0)}, "window"),  # SWA-layer metadata fed to a full layer
    ({"max_seqlen_k": 13}, "max_seqlen_k"),  # the live maximum, not the page-table span
    ({"num_splits": 3}, "num_splits"),
    ({"has_softcap": True}, "has_softcap"),
])
def test_metadata_for_other_parameters_is_replaced_with_exact(ref, engine, bug, reason):
    call = kvcache_call(**CALL)
    wrong = _engine_metadata(engine, call, **bug)
    fa = interceptor.wrap(ref.flash_attn_with_kvcache, ref.build())
    _guard("off")
    with pytest.raises(RuntimeError, match="computed for other parameters"):
        fa(**call, scheduler_metadata=wrong)  # the engine bug, as FA3 would run it
    _guard("capture")
    runtime.new_step()
    ref.COUNTERS.clear()
    got = fa(**call, scheduler_metadata=wrong)
    assert bitwise_equal(got, ref.flash_attn_with_kvcache(**call))  # FA3 scheduling itself
    assert ref.COUNTERS["metadata"] == 1  # ours, through the step cache
    assert guard.counts(ref.provider().name) == {f"guard_{reason}": 1}
    assert runtime.state().tally.injected == 1 and runtime.state().tally.calls == 1


def test_matching_and_equivalent_metadata_is_kept(ref, engine):
    """A window wider than the cache normalises to none: equivalent, so not provably wrong."""
    call = kvcache_call(**CALL)
    seen = []

    @functools.wraps(ref.flash_attn_with_kvcache)
    def entry(*args, **kwargs):
        seen.append(kwargs.get("scheduler_metadata"))
        return ref.flash_attn_with_kvcache(*args, **kwargs)

    fa = interceptor.wrap(entry, ref.build())
    for over in ({}, {"window_size": (100, 0)}):
        native = _engine_metadata(engine, call, **over)
        fa(**call, scheduler_metadata=native)
        assert seen[-1] is native
    assert runtime.state().tally.passthrough == {"engine_native": 2} and not guard.counts(ref.provider().name)


def test_unrecorded_metadata_is_kept_unless_its_size_is_known_wrong(ref):
    call = kvcache_call(**CALL)
    seen = []

    @functools.wraps(ref.flash_attn_with_kvcache)
    def entry(*args, **kwargs):
        seen.append(kwargs.get("scheduler_metadata"))
        return call["q"]

    fa = interceptor.wrap(entry, ref.build())
    odd = torch.zeros(3, dtype=torch.int32)
    fa(**call, scheduler_metadata=odd)
    assert seen[-1] is odd  # nothing known about this call's size yet: unchanged
    fa(**call)  # ours for the same parameters: size 2 in the reference build
    fa(**call, scheduler_metadata=odd)
    assert seen[-1] is seen[-2] and seen[-1] is not odd
    assert guard.counts(ref.provider().name) == {"guard_size": 1}


def test_metadata_fa3_refuses_is_dropped(ref):
    """No record, no known size; FA3's own check refuses it (before launching): FA3 schedules itself."""
    call = kvcache_call(**CALL)
    foreign = torch.zeros(5, dtype=torch.int32)
    fa = interceptor.wrap(ref.flash_attn_with_kvcache, ref.build())
    _guard("off")
    with pytest.raises(RuntimeError, match="must have shape"):
        fa(**call, scheduler_metadata=foreign)
    _guard("capture")
    assert bitwise_equal(fa(**call, scheduler_metadata=foreign), ref.flash_attn_with_kvcache(**call))
    assert guard.counts(ref.provider().name) == {"guard_fa3_refused": 1}


def test_a_copy_into_a_persistent_buffer_keeps_its_record(ref, engine):
    """vLLM copies its metadata into a FULL-graph buffer (``_store_scheduler_metadata``) and passes the copy."""
    call = kvcache_call(**CALL)

    class Builder:
        buffer = torch.zeros(16, dtype=torch.int32)

        @guard.following
        def store(self, metadata):
            n = metadata.shape[0]
            self.buffer[:n] = metadata
            self.buffer[n:] = 0
            return self.buffer[:n]

    stored = Builder().store(_engine_metadata(engine, call, window_size=(7, 0)))
    fa = interceptor.wrap(ref.flash_attn_with_kvcache, ref.build())
    assert bitwise_equal(fa(**call, scheduler_metadata=stored), ref.flash_attn_with_kvcache(**call))
    assert guard.counts(ref.provider().name) == {"guard_window": 1}
    Builder.buffer[0] += 1  # rewritten since: the record no longer describes it, so nothing is proven
    assert activation.PROCESS.guard.parameters_of(stored) is None


def test_eager_entry_touches_only_calls_with_engine_metadata(ref, engine):
    call = kvcache_call(**CALL)
    entry = interceptor.eager_entry(ref.flash_attn_with_kvcache, ref.build())
    entry(**call)
    assert runtime.state().tally.calls == 0
    got = entry(**call, scheduler_metadata=_engine_metadata(engine, call, window_size=(7, 0)))
    assert bitwise_equal(got, ref.flash_attn_with_kvcache(**call))
    assert runtime.state().tally.calls == 1 and guard.counts(ref.provider().name) == {"guard_window": 1}


def test_recording_stops_when_disarmed_and_never_breaks_the_engine(ref):
    armed = [False]
    engine = guard.recording(ref.get_scheduler_metadata, lambda: armed[0])
    call = kvcache_call(**CALL)
    md = _engine_metadata(engine, call, window_size=(7, 0))
    assert activation.PROCESS.guard.parameters_of(md) is None
    armed[0] = True
    md = _engine_metadata(engine, call, window_size=(7, 0))
    assert activation.PROCESS.guard.parameters_of(md)["window"][1]  # local
    broken = guard.recording(lambda *a, **k: "not a tensor")
    assert broken(1, 2) == "not a tensor"
