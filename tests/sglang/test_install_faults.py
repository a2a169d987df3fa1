"""SGLang adapter faults: a partial install rolls back, HookRegistry's privates are checked, and
``replace`` keeps SGLang's decode precompute wherever our wrapper will not serve the decode call."""

from __future__ import annotations

import functools
import logging
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("sglang")
pytestmark = pytest.mark.sglang

from attn_sched_plugin import runtime, switches  # noqa: E402
from attn_sched_plugin.adapters import sglang as adapter  # noqa: E402
from attn_sched_plugin.adapters import sglang_targets as targets  # noqa: E402
from attn_sched_plugin.binding import KVCACHE  # noqa: E402
from attn_sched_plugin.providers import Build, Provider  # noqa: E402
from tests.reference import fa3_reference as ref  # noqa: E402
from tests.sglang.test_backend_cpu import (  # noqa: E402,F401  (fixtures)
    B, D, H, HK, PAGE, PAGES_PER_SEQ, WINDOW, _backend, _enter, _era, _layer, _metadata, fa3_on_cpu)


@pytest.fixture
def replace_mode(monkeypatch):
    monkeypatch.setattr(switches, "_current", switches.Switches({"ATTN_SCHED_SGLANG_MODE": "replace"}))


def _sglang_state(module):
    from sglang.srt.plugins.hook_registry import HookRegistry

    cls = module.FlashAttentionBackend
    return ({k: list(v) for k, v in HookRegistry._hooks.items()}, set(HookRegistry._patched),
            {name: cls.__dict__.get(name) for name in targets.method_targets(_era(), "replace")},
            module.flash_attn_with_kvcache)


def test_install_failing_at_the_second_hook_leaves_sglang_exactly_as_before(fa3_on_cpu, replace_mode, monkeypatch,
                                                                            caplog):
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    first = f"{targets.BACKEND}.{next(iter(_era().callbacks))}"

    def theirs(*args, **kwargs):  # another plugin's hook, registered but not yet applied by load_plugins
        return None

    HookRegistry.register(first, theirs, HookType.BEFORE)
    real = HookRegistry.__dict__["_apply_target"].__func__
    calls = []

    def failing(cls, target, hooks):
        calls.append(target)
        if len(calls) == 3:  # theirs and ours applied on the first target; ours on the second fails
            raise RuntimeError("injected failure at the second hook")
        return real(cls, target, hooks)

    try:
        before = _sglang_state(fa3_on_cpu)
        monkeypatch.setattr(HookRegistry, "_apply_target", classmethod(failing))
        with caplog.at_level(logging.WARNING, logger="attn_sched_plugin"):
            report = adapter.install(build=ref.build())
        monkeypatch.undo()
        assert calls[:2] == [first, first] and len(calls) == 3  # theirs, ours on the first target; then the second
        assert not report.active and "patching failed midway" in report.reason and "1 hook(s)" in report.reason
        assert _sglang_state(fa3_on_cpu) == before
        assert sum("patching failed midway" in r.getMessage() for r in caplog.records) == 1
        assert not adapter._state.patches and adapter._state.route is None
        assert adapter.install(build=ref.build()).active  # a later install is whole
        adapter.uninstall()
    finally:
        HookRegistry._hooks[first][:] = [h for h in HookRegistry._hooks[first] if h[1] is not theirs]
        if not HookRegistry._hooks[first]:
            HookRegistry._hooks.pop(first)


def test_uninstall_keeps_other_plugins_hooks_applied_early_and_what_was_wrapped_after_us(fa3_on_cpu):
    """Uninstall undoes through the install's PatchSet: our layer goes, another plugin's hook that install applied
    early stays applied (HookRegistry will not apply it again), and a method wrapped after us is left in place."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    cls = fa3_on_cpu.FlashAttentionBackend
    first, second = list(_era().callbacks)[:2]

    def theirs(*args, **kwargs):  # another plugin's hook, registered but not yet applied by load_plugins
        return None

    target = f"{targets.BACKEND}.{first}"
    originals = {name: cls.__dict__[name] for name in (first, second)}
    HookRegistry._patched.discard(target)  # not yet applied by HookRegistry (an uninstall above leaves it marked)
    HookRegistry.register(target, theirs, HookType.BEFORE)
    try:
        assert adapter.install(build=ref.build()).active
        over_us = functools.wraps(cls.__dict__[second])(lambda *a, **k: None)
        setattr(cls, second, over_us)  # another library wraps a method after us
        adapter.uninstall()
        assert cls.__dict__[second] is over_us
        assert cls.__dict__[first] is not originals[first] and target in HookRegistry._patched
        assert [h[1] for h in HookRegistry._hooks[target]] == [theirs]
    finally:
        for name, fn in originals.items():
            setattr(cls, name, fn)
        HookRegistry._hooks.pop(target, None)
        HookRegistry._patched.discard(target)
        HookRegistry._patched.discard(f"{targets.BACKEND}.{second}")


@pytest.mark.parametrize("private", ["_hooks", "_patched", "_apply_target"])
def test_missing_hook_registry_private_declines_naming_it(fa3_on_cpu, monkeypatch, private):
    from sglang.srt.plugins.hook_registry import HookRegistry

    before = _sglang_state(fa3_on_cpu)
    monkeypatch.delattr(HookRegistry, private)
    report = adapter.install(build=ref.build())
    monkeypatch.undo()
    assert not report.active and private in report.reason and "nothing patched" in report.reason
    assert _sglang_state(fa3_on_cpu) == before


def test_propagate_patch_with_another_shape_declines(fa3_on_cpu, monkeypatch):
    from sglang.srt.plugins import hook_registry

    monkeypatch.setattr(hook_registry, "_propagate_patch", lambda original, wrapped: 0)
    report = adapter.install(build=ref.build())
    assert not report.active and "_propagate_patch" in report.reason


def test_installed_hook_registry_has_the_surface_the_adapter_uses(sglang_backend):
    assert targets.check_hook_registry() == []


# --- replace mode: SGLang's precompute stays wherever we will not serve the decode call -------------

def _with_precompute(backend):
    """What ``init_cuda_graph_state`` sets for the precompute (sgl_kernel's get_scheduler_metadata: the reference)."""
    def sgl_get_scheduler_metadata(num_heads, num_heads_k, **kw):
        return ref.get_scheduler_metadata(num_heads_q=num_heads, num_heads_kv=num_heads_k, **kw)

    backend.__dict__.update(_get_scheduler_metadata=sgl_get_scheduler_metadata, num_attention_heads=H,
                            num_kv_heads=HK, head_dim=D, has_softcap=False)
    return backend


def _captured_decode(module, seed: int = 7) -> list[torch.Tensor]:
    """A decode step as SGLang captures it: the precompute runs first (``_init_full_cg_decode_metadata``),
    its result rides in the metadata, then 4 layers (full and SWA interleaved) call FA3."""
    gen = torch.Generator().manual_seed(seed)
    kv = [torch.randn(B * PAGES_PER_SEQ * PAGE, HK, D, generator=gen) for _ in range(8)]
    pool = SimpleNamespace(get_kv_buffer=lambda layer_id: (kv[2 * layer_id], kv[2 * layer_id + 1]))
    md = _metadata(module, [11, 17, 29], gen)
    md.max_seq_len_k = PAGES_PER_SEQ * PAGE  # what sgl_kernel's forward derives from the page table here
    backend = _with_precompute(_backend(module, pool, md))
    md.scheduler_metadata = backend._compute_scheduler_metadata(B, md.max_seq_len_k, md.cache_seqlens_int32,
                                                                md.cu_seqlens_q)
    runtime.new_step()
    batch = SimpleNamespace(batch_size=B, spec_info=None, _attn_output=None, out_cache_loc=None, token_to_kv_pool=pool)
    layers = [_layer(i, WINDOW if i % 2 else -1, module.AttentionType.DECODER) for i in range(4)]
    return [backend.forward_decode(torch.randn(B, H * D, generator=gen), None, None, layer, batch,
                                   save_kv_cache=False) for layer in layers]


@pytest.fixture
def expected(fa3_on_cpu):
    ref.COUNTERS.clear()
    out = _captured_decode(fa3_on_cpu)
    assert ref.COUNTERS["metadata"] == 1 and ref.COUNTERS["prepare"] == 2  # SGLang alone: SWA layers prepare
    return out


def _run(module, expected, provider=None) -> dict:
    ref.COUNTERS.clear()
    got = _captured_decode(module)
    assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(expected, got))
    return {"metadata": ref.COUNTERS["metadata"], "prepare": ref.COUNTERS["prepare"]}


def test_replace_skips_sglang_precompute_when_our_route_serves(fa3_on_cpu, replace_mode, expected):
    assert adapter.install(build=ref.build()).active
    try:
        _enter("capture")
        assert _run(fa3_on_cpu, expected) == {"metadata": 2, "prepare": 0}
    finally:
        adapter.uninstall()


def test_replace_keeps_sglang_precompute_when_another_plugin_rebound_fa3(fa3_on_cpu, replace_mode, expected,
                                                                          monkeypatch):
    assert adapter.install(build=ref.build())
    try:
        _enter("capture")
        plain = adapter._state.route.plain
        monkeypatch.setattr(fa3_on_cpu, "flash_attn_with_kvcache", functools.wraps(plain)(
            lambda *a, **k: plain(*a, **k)))
        assert _run(fa3_on_cpu, expected) == {"metadata": 1, "prepare": 2}  # not 4: SGLang's stays
    finally:
        monkeypatch.undo()
        adapter.uninstall()


@pytest.mark.parametrize("max_bs,kept", [(B, True), (B - 1, False)])
def test_replace_keeps_sglang_precompute_for_torch_compiled_batch_sizes(fa3_on_cpu, replace_mode, monkeypatch,
                                                                         max_bs, kept):
    from sglang.srt import runtime_context

    monkeypatch.setattr(runtime_context.get_flags().capture, "enable_torch_compile", True)
    monkeypatch.setattr(runtime_context, "get_exec", lambda: SimpleNamespace(
        graph=SimpleNamespace(torch_compile_max_bs=max_bs)))
    assert adapter.install(build=ref.build()).active
    try:
        _enter("capture")
        backend = _with_precompute(_backend(fa3_on_cpu, None, None))
        seqlens, cu = torch.tensor([3, 5, 7], dtype=torch.int32), torch.arange(B + 1, dtype=torch.int32)
        # dynamo traces FA3 itself under torch.compile: those graphs need SGLang's metadata
        assert (backend._compute_scheduler_metadata(B, 7, seqlens, cu) is not None) == kept
    finally:
        adapter.uninstall()


def test_replace_keeps_sglang_precompute_after_a_captured_step_passed_through(fa3_on_cpu, replace_mode, expected,
                                                                               caplog):
    unavailable = Provider("no-such-build", "attn_sched_no_such_build")
    assert adapter.install(build=Build(unavailable, KVCACHE)).active
    try:
        _enter("capture")
        first = _run(fa3_on_cpu, expected)  # every call declines: this graph pays per layer
        assert first == {"metadata": 0, "prepare": 4}
        with caplog.at_level(logging.WARNING, logger="attn_sched_plugin"):
            _enter("capture")
        assert any("precompute is kept" in r.getMessage() for r in caplog.records)
        assert _run(fa3_on_cpu, expected) == {"metadata": 1, "prepare": 2}
    finally:
        adapter.uninstall()


def test_replay_follows_the_capture_s_choice(fa3_on_cpu, replace_mode):
    """SGLang recomputes at replay only where the capture kept the precompute: replays always run it."""
    backend = _with_precompute(_backend(fa3_on_cpu, None, None))
    assert adapter.install(build=ref.build()).active
    try:
        _enter("capture")
        seqlens, cu = torch.tensor([3, 5, 7], dtype=torch.int32), torch.arange(B + 1, dtype=torch.int32)
        assert backend._compute_scheduler_metadata(B, 7, seqlens, cu) is None
        _enter("replay")
        assert backend._compute_scheduler_metadata(B, 7, seqlens, cu) is not None
    finally:
        adapter.uninstall()
