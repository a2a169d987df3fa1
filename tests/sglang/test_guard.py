"""SGLang's metadata bugs through the real ``FlashAttentionBackend.forward_decode`` on CPU, with and
without the guard (the reference FA3 refuses metadata computed for other parameters or of another size).

The metadata reaches the decode calls the way SGLang hands it over: ``FlashAttentionMetadata
.scheduler_metadata``, consumed by the full-attention layers only (SWA layers pass None). It is
computed by SGLang's own ``_compute_scheduler_metadata`` through sgl_kernel's
``get_scheduler_metadata`` as the backend binds it in ``__init__`` (after ``load_plugins``; the
adapter records it), with the reference FA3 behind it.
"""

from __future__ import annotations

import inspect

import pytest
import torch

pytest.importorskip("sglang")

from attn_sched_plugin import guard, runtime, stats, switches  # noqa: E402
from attn_sched_plugin.adapters import sglang as adapter  # noqa: E402
from tests.reference import fa3_reference as ref  # noqa: E402
from tests.sglang.test_backend_cpu import (  # noqa: E402,F401  (fa3_on_cpu: the fixture)
    B, D, H, HK, PAGE, PAGES_PER_SEQ, WINDOW, _backend, _enter, _layer, _metadata, fa3_on_cpu)

pytestmark = pytest.mark.sglang

SEQLENS = [11, 17, 29]  # live maximum 29; the page table spans 8 x 4 = 32 tokens


def _sgl_get_scheduler_metadata(batch_size, max_seqlen_q, max_seqlen_k, num_heads, num_heads_k, headdim,
                                cache_seqlens, qkv_dtype=torch.bfloat16, headdim_v=None, cu_seqlens_q=None,
                                cu_seqlens_k=None, cu_seqlens_k_new=None, seqused_q=None, leftpad_k=None,
                                page_size=None, max_seqlen_k_new=0, causal=False, window_size=(-1, -1),
                                attention_chunk=0, has_softcap=False, num_splits=0, pack_gqa=None, sm_margin=0):
    """sgl_kernel's ``get_scheduler_metadata`` (its names), computed by the reference FA3."""
    return ref.get_scheduler_metadata(batch_size, max_seqlen_q, max_seqlen_k, num_heads, num_heads_k, headdim,
                                      cache_seqlens, qkv_dtype, headdim_v, cu_seqlens_q, cu_seqlens_k_new, leftpad_k,
                                      page_size, max_seqlen_k_new, causal, window_size, attention_chunk, has_softcap,
                                      num_splits, pack_gqa, sm_margin)


@pytest.fixture
def sgl_kernel_on_cpu(fa3_on_cpu, monkeypatch):
    import sgl_kernel.flash_attn as kernel

    real = inspect.signature(kernel.get_scheduler_metadata)
    assert list(real.parameters) == list(inspect.signature(_sgl_get_scheduler_metadata).parameters)
    monkeypatch.setattr(kernel, "get_scheduler_metadata", _sgl_get_scheduler_metadata)
    return kernel


@pytest.fixture
def plugin(sgl_kernel_on_cpu, monkeypatch):
    """Install with the switches given; yields the install function."""
    from attn_sched_plugin.activation import PROCESS
    from attn_sched_plugin.guard_records import GuardRecords

    if not PROCESS.hooks.manager.is_registered(adapter):  # as the entry point registers it (its engine counters)
        PROCESS.hooks.manager.register(adapter)

    PROCESS.guard = GuardRecords()  # no sizes known from earlier tests: the size case is FA3's own refusal here

    def _install(**env):
        adapter.uninstall()
        monkeypatch.setattr(switches, "_current", switches.Switches(env))
        assert adapter.install(build=ref.build()).active
    yield _install
    adapter.uninstall()


def _precomputed(backend, md):
    """What SGLang's decode metadata init stores (``init_forward_metadata``; the capture path alike)."""
    return backend._compute_scheduler_metadata(B, md.max_seq_len_k, md.cache_seqlens_int32, md.cu_seqlens_q)


def _swa_window(backend, md):
    """The GPT-OSS crash: metadata of the SWA layers' window handed to the full layers."""
    return backend._get_scheduler_metadata(
        batch_size=B, max_seqlen_q=1, max_seqlen_k=PAGES_PER_SEQ * PAGE, num_heads=H, num_heads_k=HK, headdim=D,
        cache_seqlens=md.cache_seqlens_int32, qkv_dtype=torch.float32, cu_seqlens_q=md.cu_seqlens_q,
        page_size=PAGE, causal=True, window_size=(WINDOW, 0))


def _other_size(backend, md):
    """SGLang #22800: a slice of its capture buffer whose size is not the one the forward expects."""
    return torch.zeros(1 + 4 * 4, dtype=torch.int32)[:9]


def _step(module, sgl_kernel, make=None) -> list[torch.Tensor]:
    """One decode step, 4 layers (full and SWA interleaved), with ``make(backend, md)`` as SGLang's metadata."""
    gen = torch.Generator().manual_seed(3)
    kv = [torch.randn(B * PAGES_PER_SEQ * PAGE, HK, D, generator=gen) for _ in range(8)]
    pool = type("Pool", (), {"get_kv_buffer": lambda self, layer_id: (kv[2 * layer_id], kv[2 * layer_id + 1])})()
    md = _metadata(module, SEQLENS, gen)
    backend = _backend(module, pool, md)
    backend.__dict__.update(_get_scheduler_metadata=sgl_kernel.get_scheduler_metadata, num_attention_heads=H,
                            num_kv_heads=HK, head_dim=D, has_softcap=False)
    runtime.new_step()
    md.scheduler_metadata = None if make is None else make(backend, md)
    batch = type("Batch", (), dict(batch_size=B, spec_info=None, _attn_output=None, out_cache_loc=None,
                                   token_to_kv_pool=pool))()
    decoder = module.AttentionType.DECODER
    return [backend.forward_decode(torch.randn(B, H * D, generator=gen), None, None,
                                   _layer(i, WINDOW if i % 2 else -1, decoder), batch, save_kv_cache=False)
            for i in range(4)]


@pytest.mark.parametrize("make, reason, refusal", [
    (_precomputed, "max_seqlen_k", "computed for other parameters"),  # SGLang #30439-class
    (_swa_window, "window", "computed for other parameters"),  # GPT-OSS SWA metadata on full layers
    (_other_size, "fa3_refused", "must have shape"),  # SGLang #22800-class
], ids=["stale-live-max", "swa-window-on-full-layers", "capture-size-mismatch"])
def test_keep_native_capture_with_wrong_sglang_metadata(fa3_on_cpu, sgl_kernel_on_cpu, plugin, make, reason,
                                                       refusal):
    expected = _step(fa3_on_cpu, sgl_kernel_on_cpu)  # FA3 scheduling itself
    with pytest.raises(RuntimeError, match=refusal):
        _step(fa3_on_cpu, sgl_kernel_on_cpu, make)  # the bug, without the plugin
    plugin(ATTN_SCHED_SGLANG_MODE="keep-native", ATTN_SCHED_GUARD="off")
    _enter("capture")
    with pytest.raises(RuntimeError, match=refusal):
        _step(fa3_on_cpu, sgl_kernel_on_cpu, make)  # the plugin without its guard passes SGLang's metadata on
    plugin(ATTN_SCHED_SGLANG_MODE="keep-native")
    _enter("capture")
    got = _step(fa3_on_cpu, sgl_kernel_on_cpu, make)
    assert all(torch.equal(a, b) for a, b in zip(got, expected)) and len(got) == len(expected)
    assert stats.snapshot()["engine"]["sglang"] == {f"guard_{reason}": 2}  # the two full layers
    assert f"guard_{reason}=" in stats.summary_line()


def test_replace_mode_removes_sglang_metadata_from_captures(fa3_on_cpu, sgl_kernel_on_cpu, plugin):
    """``replace`` (default) skips SGLang's capture/replay precompute: no SGLang metadata reaches a
    captured call, so none of the classes above can arise there; every layer gets ours."""
    expected = _step(fa3_on_cpu, sgl_kernel_on_cpu)
    plugin()
    _enter("capture")
    ref.COUNTERS.clear()
    got = _step(fa3_on_cpu, sgl_kernel_on_cpu, _precomputed)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert ref.COUNTERS["prepare"] == 0 and ref.COUNTERS["metadata"] == 2  # full and SWA schedules, ours


def test_eager_steps_are_guarded_only_with_always(fa3_on_cpu, sgl_kernel_on_cpu, plugin):
    expected = _step(fa3_on_cpu, sgl_kernel_on_cpu)
    plugin(ATTN_SCHED_SGLANG_MODE="keep-native")
    _enter("eager")
    with pytest.raises(RuntimeError, match="computed for other parameters"):
        _step(fa3_on_cpu, sgl_kernel_on_cpu, _precomputed)  # default: eager steps reach FA3 untouched
    plugin(ATTN_SCHED_SGLANG_MODE="keep-native", ATTN_SCHED_GUARD="always")
    _enter("eager")
    got = _step(fa3_on_cpu, sgl_kernel_on_cpu, _precomputed)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_uninstall_restores_sgl_kernel(sgl_kernel_on_cpu, plugin):
    plugin()
    assert sgl_kernel_on_cpu.get_scheduler_metadata is not _sgl_get_scheduler_metadata
    adapter.uninstall()
    assert sgl_kernel_on_cpu.get_scheduler_metadata is _sgl_get_scheduler_metadata
