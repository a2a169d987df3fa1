"""Drive the real ``FlashAttentionBackend.forward_decode`` on CPU, the reference FA3 standing in.

The backend is built with ``__new__`` plus the attributes its decode path reads (its ``__init__``
needs a full ModelRunner and SGLang's published runtime context); the metadata is the real
``FlashAttentionMetadata`` dataclass filled as ``init_forward_metadata`` fills it for decode.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("sglang")
pytestmark = pytest.mark.sglang

from attn_sched_plugin import runtime  # noqa: E402
from attn_sched_plugin.adapters import sglang as adapter  # noqa: E402
from attn_sched_plugin.adapters import sglang_targets as targets  # noqa: E402
from tests.reference import fa3_reference as ref  # noqa: E402

B, H, HK, D, PAGE, PAGES_PER_SEQ, WINDOW = 3, 4, 2, 64, 4, 8, 5


def _reference_kernel(q, k_cache, v_cache, k=None, v=None, qv=None, *args, out=None, only_qv=False,
                      cu_seqlens_k_new=None, attention_chunk=None, **kwargs):
    """Stands in for sgl_kernel's FA3 under SGLang's dispatcher, with sgl_kernel's own argument handling
    (``attention_chunk`` None -> 0); FA3's forward ignores ``cu_seqlens_k_new`` without ``k_new``."""
    kwargs["attention_chunk"] = 0 if attention_chunk is None else int(attention_chunk)
    result = ref.flash_attn_with_kvcache(q, k_cache, v_cache, k, v, qv, *args,
                                         cu_seqlens_k_new=cu_seqlens_k_new if k is not None else None, **kwargs)
    if out is not None:
        out.copy_(result[0] if isinstance(result, tuple) else result)
    return result


@pytest.fixture
def fa3_on_cpu(sglang_backend, monkeypatch):
    era = targets.era_for(targets.parse(targets.installed_version()))
    dispatcher = __import__(era.fa3_entry.rsplit(".", 1)[0], fromlist=["_"])
    monkeypatch.setattr(dispatcher, "fa3_flash_attn_with_kvcache", _reference_kernel)
    return sglang_backend


@pytest.fixture
def installed(fa3_on_cpu):
    report = adapter.install(provider=ref.provider())
    assert report.active, report.reason
    yield report
    adapter.uninstall()


def _layer(layer_id: int, window: int, attn_type):
    return SimpleNamespace(layer_id=layer_id, tp_q_head_num=H, tp_k_head_num=HK, tp_v_head_num=HK, head_dim=D,
                           v_head_dim=D, scaling=D ** -0.5, logit_cap=0.0, sliding_window_size=window,
                           attn_type=attn_type, is_cross_attention=False, k_scale=None, v_scale=None)


def _backend(module, pool, metadata, topk: int = 0, guarded: bool = False):
    backend = module.FlashAttentionBackend.__new__(module.FlashAttentionBackend)
    backend.__dict__.update(
        fa_impl_ver=3, use_mla=False, kv_cache_is_mxfp8=False, kv_cache_dtype_str="auto",
        kv_cache_dtype=torch.float32, page_size=PAGE, token_to_kv_pool=pool, local_attn_builder=None,
        has_local_attention=False, attention_chunk_size=None, topk=topk, use_sliding_window_kv_pool=False,
        is_prefill_aware_swa=False, _decode_uses_static_max_seqlen_k=False, num_splits=0, decode_num_splits=0,
        full_cg_prefill_metadata=None, forward_metadata=metadata, forward_metadata_spec_decode_expand=None,
        _disable_scheduler_metadata_precompute=guarded, is_encoder_decoder=False, has_swa=True,
        sliding_window_size=WINDOW, _kv_shard_pool=None, attn_cp_size=1,
    )
    return backend


def _metadata(module, seqlens: list[int], gen: torch.Generator):
    page_table = torch.randperm(B * PAGES_PER_SEQ, generator=gen).view(B, PAGES_PER_SEQ).to(torch.int32)
    md = module.FlashAttentionMetadata()
    md.cache_seqlens_int32 = torch.tensor(seqlens, dtype=torch.int32)
    md.cu_seqlens_q = torch.arange(0, B + 1, dtype=torch.int32)
    md.max_seq_len_q, md.max_seq_len_k = 1, max(seqlens)
    md.page_table = page_table
    return md


def _decode_step(module, draft_steps: int, topk: int, guarded: bool = False) -> list[torch.Tensor]:
    """One step: ``draft_steps`` backends (multi-step draft) x 4 layers, full and SWA interleaved."""
    gen = torch.Generator().manual_seed(7)
    kv = [torch.randn(B * PAGES_PER_SEQ * PAGE, HK, D, generator=gen) for _ in range(8)]
    pool = SimpleNamespace(get_kv_buffer=lambda layer_id: (kv[2 * layer_id], kv[2 * layer_id + 1]))
    decoder = module.AttentionType.DECODER
    layers = [_layer(i, WINDOW if i % 2 else -1, decoder) for i in range(4)]
    spec_info = object() if topk else None
    outputs = []
    runtime.new_step()
    for step in range(draft_steps):
        seqlens = [11 + step, 17 + step, 29 + step]
        backend = _backend(module, pool, _metadata(module, seqlens, gen), topk, guarded)
        batch = SimpleNamespace(batch_size=B, spec_info=spec_info, _attn_output=None, out_cache_loc=None,
                                token_to_kv_pool=pool)
        for layer in layers:
            q = torch.randn(B, H * D, generator=gen)
            outputs.append(backend.forward_decode(q, None, None, layer, batch, save_kv_cache=False))
    return outputs


@pytest.mark.parametrize("draft_steps,topk", [(1, 0), (3, 1)], ids=["decode", "multi-step-draft-topk1"])
def test_decode_shares_one_metadata_per_shape_and_step(fa3_on_cpu, draft_steps, topk):
    ref.COUNTERS.clear()
    expected = _decode_step(fa3_on_cpu, draft_steps, topk)
    assert ref.COUNTERS["prepare"] == 4 * draft_steps and ref.COUNTERS["metadata"] == 0
    report = adapter.install(provider=ref.provider())
    try:
        assert report.active
        ref.COUNTERS.clear()
        got = _decode_step(fa3_on_cpu, draft_steps, topk)
    finally:
        adapter.uninstall()
    # per draft backend: one schedule for the full layers, one for the SWA layers; no layer prepares
    assert ref.COUNTERS["metadata"] == 2 * draft_steps
    assert ref.COUNTERS["prepare"] == 0
    assert all(torch.equal(a, b) for a, b in zip(expected, got)) and len(got) == len(expected)


def test_dp_attention_guard_is_respected(installed, fa3_on_cpu):
    ref.COUNTERS.clear()
    _decode_step(fa3_on_cpu, 1, 0, guarded=True)
    assert ref.COUNTERS["metadata"] == 0 and ref.COUNTERS["prepare"] == 4
    assert runtime.state().tally.passthrough[adapter.GUARDED] == 4


def test_calls_outside_the_backend_forwards_pass_through(installed, fa3_on_cpu):
    era = targets.era_for(targets.parse(targets.installed_version()))
    entry = targets.resolve(era.fa3_entry)
    ref.COUNTERS.clear()
    q = torch.randn(B, 1, H, D)
    k = torch.randn(B, 16, HK, D)
    entry(q, k, k.clone(), cache_seqlens=torch.tensor([3, 5, 7], dtype=torch.int32), causal=True)
    assert ref.COUNTERS["prepare"] == 1 and ref.COUNTERS["metadata"] == 0
    assert runtime.state().tally.passthrough[adapter.OUTSIDE] == 1


def test_metadata_init_callbacks_start_a_new_step(installed, fa3_on_cpu):
    era = targets.era_for(targets.parse(targets.installed_version()))
    for name in era.callbacks:
        before = runtime.state().tally.step
        with pytest.raises(Exception):  # the real callback then fails on a bare object; the step came first
            getattr(fa3_on_cpu.FlashAttentionBackend, name)(object(), *([None] * 9)[: _arity(name, era)])
        assert runtime.state().tally.step > before, name


def _arity(name: str, era) -> int:
    return len(era.callbacks[name]) - 1


def test_uninstall_restores_every_target(fa3_on_cpu):
    originals = {t: targets.resolve(t) for t in _all_targets()}
    adapter.install(provider=ref.provider())
    assert all(targets.resolve(t) is not originals[t] for t in originals)
    adapter.uninstall()
    assert all(targets.resolve(t) is originals[t] for t in originals)
    assert fa3_on_cpu.flash_attn_with_kvcache is originals[_era().fa3_entry]


def _era():
    return targets.era_for(targets.parse(targets.installed_version()))


def _all_targets() -> list[str]:
    era = _era()
    return [era.fa3_entry] + [f"{targets.BACKEND}.{n}" for n in targets.method_targets(era, "keep-native")]
