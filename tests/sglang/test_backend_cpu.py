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
    report = adapter.install(build=ref.build())
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


def _enter(phase: str, backend=None) -> None:
    """What SGLang's metadata callback of ``phase`` tells the adapter (its hook, run as HookRegistry runs it)."""
    backend = backend or SimpleNamespace(_disable_scheduler_metadata_precompute=False)
    {"capture": adapter._capture_step, "replay": adapter._replay_step, "eager": adapter._eager_step}[phase](backend)


@pytest.mark.parametrize("draft_steps,topk", [(1, 0), (3, 1)], ids=["decode", "multi-step-draft-topk1"])
def test_captured_decode_shares_one_metadata_per_shape_and_step(fa3_on_cpu, draft_steps, topk):
    ref.COUNTERS.clear()
    expected = _decode_step(fa3_on_cpu, draft_steps, topk)
    assert ref.COUNTERS["prepare"] == 4 * draft_steps and ref.COUNTERS["metadata"] == 0
    report = adapter.install(build=ref.build())
    try:
        assert report.active
        _enter("capture")
        ref.COUNTERS.clear()
        got = _decode_step(fa3_on_cpu, draft_steps, topk)
    finally:
        adapter.uninstall()
    # per draft backend: one schedule for the full layers, one for the SWA layers; no layer prepares
    assert ref.COUNTERS["metadata"] == 2 * draft_steps
    assert ref.COUNTERS["prepare"] == 0
    assert all(torch.equal(a, b) for a, b in zip(expected, got)) and len(got) == len(expected)


@pytest.mark.parametrize("phase", ["eager", "replay"])
def test_outside_captures_fa3_is_called_untouched(installed, fa3_on_cpu, phase):
    """Issue 12: no per-call work in eager steps: the backend calls the original function object."""
    _enter("capture")
    _enter(phase)
    assert fa3_on_cpu.flash_attn_with_kvcache is targets.resolve(_era().fa3_entry)
    ref.COUNTERS.clear()
    calls_before = runtime.state().tally.calls
    _decode_step(fa3_on_cpu, 1, 0)
    assert ref.COUNTERS["prepare"] == 4 and ref.COUNTERS["metadata"] == 0
    assert runtime.state().tally.calls == calls_before


def test_dp_attention_guard_is_respected(installed, fa3_on_cpu):
    _enter("capture", SimpleNamespace(_disable_scheduler_metadata_precompute=True))
    ref.COUNTERS.clear()
    _decode_step(fa3_on_cpu, 1, 0, guarded=True)
    assert ref.COUNTERS["metadata"] == 0 and ref.COUNTERS["prepare"] == 4
    assert runtime.state().tally.calls == 0


def test_calls_from_other_modules_are_not_routed(installed, fa3_on_cpu):
    _enter("capture")
    entry = targets.resolve(_era().fa3_entry)
    ref.COUNTERS.clear()
    q = torch.randn(B, 1, H, D)
    k = torch.randn(B, 16, HK, D)
    entry(q, k, k.clone(), cache_seqlens=torch.tensor([3, 5, 7], dtype=torch.int32), causal=True)
    assert ref.COUNTERS["prepare"] == 1 and ref.COUNTERS["metadata"] == 0
    assert runtime.state().tally.calls == 0


def test_sglang_callbacks_set_the_phase(installed, fa3_on_cpu):
    """The real (hooked) callbacks, on a bare backend: the hook runs first, then SGLang's body fails."""
    backend_cls, era = fa3_on_cpu.FlashAttentionBackend, _era()
    bare = SimpleNamespace(_disable_scheduler_metadata_precompute=False)

    def callback(name, *args, **kwargs):
        try:
            getattr(backend_cls, name)(bare, *args, **kwargs)
        except Exception:  # noqa: BLE001 - SGLang's body on a bare object; only the hook matters here
            pass
        return adapter._state.route.capturing, adapter._state.eager

    new_api = "init_forward_metadata_out_graph" in era.callbacks
    capture = (lambda: callback("init_forward_metadata_out_graph", None, in_capture=True)) if new_api else (
        lambda: callback("init_forward_metadata_capture_cuda_graph", *[None] * 7))
    replay = (lambda: callback("init_forward_metadata_out_graph", None, in_capture=False)) if new_api else (
        lambda: callback("init_forward_metadata_replay_cuda_graph", *[None] * 8))
    step = runtime.state().tally.step
    assert capture() == (True, False) and runtime.state().tally.step > step
    if new_api:  # the captured run itself starts a step (warm-up metadata is not reused in the graph)
        step = runtime.state().tally.step
        callback("init_forward_metadata_in_graph", None)
        assert runtime.state().tally.step > step and adapter._state.route.capturing
    assert replay() == (False, False)
    assert capture() == (True, False)
    assert callback("init_forward_metadata", None) == (False, True)


@pytest.mark.parametrize("mode", ["replace", "keep-native"])
def test_sglang_precompute_runs_in_eager_steps_only_in_replace_mode(fa3_on_cpu, monkeypatch, mode):
    """``replace`` skips SGLang's capture-time precompute (the graphs carry ours) but never leaves eager
    decode without SGLang's own metadata; replays run it (SGLang calls it there only where the capture
    kept it); ``keep-native`` never touches it."""
    from attn_sched_plugin import switches

    monkeypatch.setattr(switches, "_current", switches.Switches({"ATTN_SCHED_SGLANG_MODE": mode}))
    def sglang_precompute(self, batch_size, max_seq_len_k, cache_seqlens, cu_seqlens_q):
        return "sglang's"

    monkeypatch.setattr(fa3_on_cpu.FlashAttentionBackend, "_compute_scheduler_metadata", sglang_precompute)
    assert adapter.install(build=ref.build()).active
    try:
        precompute = fa3_on_cpu.FlashAttentionBackend._compute_scheduler_metadata
        results = {}
        for phase in ("eager", "capture", "replay", "eager"):
            _enter(phase)
            results.setdefault(phase, []).append(precompute(object(), 1, 16, None, None))
    finally:
        adapter.uninstall()
    shared = None if mode == "replace" else "sglang's"
    assert results == {"eager": ["sglang's", "sglang's"], "capture": [shared], "replay": ["sglang's"]}


def test_uninstall_restores_every_target(fa3_on_cpu):
    originals = {t: targets.resolve(t) for t in _all_targets()}
    adapter.install(build=ref.build())
    _enter("capture")
    assert all(targets.resolve(t) is not originals[t] for t in originals if t != _era().fa3_entry)
    assert fa3_on_cpu.flash_attn_with_kvcache is not originals[_era().fa3_entry]
    adapter.uninstall()
    assert all(targets.resolve(t) is originals[t] for t in originals)
    assert fa3_on_cpu.flash_attn_with_kvcache is originals[_era().fa3_entry]


def _era():
    return targets.era_for(targets.parse(targets.installed_version()))


def _all_targets() -> list[str]:
    era = _era()
    return [era.fa3_entry] + [f"{targets.BACKEND}.{n}" for n in targets.method_targets(era, "replace")]
