"""Drive the real FlashAttentionMetadataBuilder and FlashAttentionImpl.forward on CPU.

The reference FA3 rejects metadata computed for any parameter the forward derives differently,
so a passing output comparison also proves every injected tensor was exact for its call.
"""

import functools

import pytest
import torch
from packaging.version import Version

pytest.importorskip("vllm")

from attn_sched_plugin import runtime, stats  # noqa: E402
from attn_sched_plugin.adapters import vllm as adapter, vllm_targets as targets  # noqa: E402
from tests.reference import fa3_reference as ref  # noqa: E402
from tests.vllm import harness  # noqa: E402

pytestmark = pytest.mark.vllm

MIXED = [None, 8, None, 8, 32]  # gpt-oss / Gemma-like: three distinct window configs
# two steps; max_seq_len equals the table span (3 blocks x 16), see test_native_mismatch
STEPS = [([1, 1, 3], [30, 17, 48]), ([1, 1, 1], [31, 18, 48])]


def _registry():
    import importlib

    mods = targets.registry_modules(targets.installed_version())
    return importlib.import_module(mods[0]) if mods else None


def _backend(patched: bool):
    """The backend vLLM would pick: through the registry (0.13+), else the class itself (0.11)."""
    from vllm.v1.attention.backends import flash_attn as fa

    registry = _registry()
    return registry.AttentionBackendEnum.FLASH_ATTN.get_class() if patched and registry else fa.FlashAttentionBackend


def _run(tmp_path, windows, patched, method="build", tweak=None):
    model = harness.make_model(harness.vllm_config(tmp_path), windows, _backend(patched))
    if tweak is not None:
        tweak(model.builder)
    outputs, counters, steps = [], [], set()
    for i, (q_lens, s_lens) in enumerate(STEPS):
        ref.COUNTERS.clear()
        outputs += harness.run_step(model, harness.make_batch(q_lens, s_lens, 3, seed=i), method, seed=i)
        counters.append(dict(ref.COUNTERS))
        steps.add(runtime.state().tally.step)
    # every metadata build must have started a new step exactly when our builder is in use
    assert len(steps) == (2 if patched else 1)
    return model, outputs, counters


def _delta(before: dict) -> dict:
    after = stats.snapshot()
    out = {k: after["intercepted"][k] - before["intercepted"][k] for k in ("calls", "injected", "computed")}
    out["passthrough"] = {r: n - before["passthrough"].get(r, 0) for r, n in after["passthrough"].items()
                          if n != before["passthrough"].get(r, 0)}
    return out


def test_registered_backend_is_ours(install):
    install()
    backend = _backend(True)
    if _registry() is not None:
        assert backend.__module__ == "attn_sched_plugin.adapters.vllm_backend"
    assert getattr(backend.get_builder_cls().build, adapter.STEP_MARK)


CAPTURE = "build_for_cudagraph_capture"


def test_mixed_windows_one_metadata_per_window_per_captured_step(install, tmp_path):
    _, expected, plain = _run(tmp_path, MIXED, patched=False, method=CAPTURE)
    assert [c.get("prepare") for c in plain] == [len(MIXED)] * 2  # AOT off: every layer prepares
    install()
    before = stats.snapshot()
    model, got, counted = _run(tmp_path, MIXED, patched=True, method=CAPTURE)
    assert model.builder.aot_schedule is False  # vLLM itself turned AOT off
    assert [c.get("metadata") for c in counted] == [3, 3]  # (-1,-1), (7,0), (31,0) per step
    assert all(c.get("prepare", 0) == 0 for c in counted)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    d = _delta(before)
    assert (d["calls"], d["injected"], d["computed"]) == (10, 10, 6)


@pytest.mark.parametrize("method", ["build", "build_for_drafting"])
def test_eager_steps_reach_fa3_untouched(install, tmp_path, method):
    """Issue 12: outside captures vLLM calls the original FA3 entry (no per-call cost); every layer prepares."""
    import importlib

    fa = importlib.import_module(targets.FA_MODULE)
    if not hasattr(fa.FlashAttentionMetadataBuilder, method):
        # 0.34 removed build_for_drafting: its drafters call build (no fast_build) and update_draft_decode_metadata
        assert targets.parse(targets.installed_version()) >= Version("0.34.0"), method
        pytest.skip(f"vLLM {targets.installed_version()} has no {method}")
    plain_entry = fa.flash_attn_varlen_func
    _, expected, _ = _run(tmp_path, MIXED, patched=False, method=method)
    install()
    before = stats.snapshot()
    model = harness.make_model(harness.vllm_config(tmp_path), MIXED, _backend(True))
    harness.run_step(model, harness.make_batch([1, 1, 3], [30, 17, 48], 3), CAPTURE)  # a capture first
    assert fa.flash_attn_varlen_func is not plain_entry
    ref.COUNTERS.clear()
    got = harness.run_step(model, harness.make_batch(*STEPS[0], 3, seed=0), method, seed=0)
    assert fa.flash_attn_varlen_func is plain_entry
    assert ref.COUNTERS["prepare"] == len(MIXED) and ref.COUNTERS.get("metadata", 0) == 0
    assert all(torch.equal(a, b) for a, b in zip(got, expected[: len(MIXED)]))
    assert _delta(before)["calls"] == len(MIXED)  # the capture step's calls only


def test_drafter_uniform_model_shares_one_in_captures(install, tmp_path):
    """fast_build skips vLLM's AOT metadata even for a uniform model: inside a capture we compute one per step."""
    def drafting(builder):
        builder.build = functools.partial(builder.build, fast_build=True)

    _, expected, plain = _run(tmp_path, [None] * 3, patched=False, method=CAPTURE, tweak=drafting)
    assert [c.get("prepare") for c in plain] == [3, 3]
    install()
    _, got, counted = _run(tmp_path, [None] * 3, patched=True, method=CAPTURE, tweak=drafting)
    assert [c.get("metadata") for c in counted] == [1, 1]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_uniform_model_keeps_vllm_metadata(install, tmp_path):
    _, expected, _ = _run(tmp_path, [None] * 3, patched=False, method=CAPTURE)
    install()
    before = stats.snapshot()
    _, got, counted = _run(tmp_path, [None] * 3, patched=True, method=CAPTURE)
    assert [c.get("metadata") for c in counted] == [1, 1]  # vLLM's own, once per step
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    d = _delta(before)
    assert (d["injected"], d["computed"], d["passthrough"]) == (0, 0, {"engine_native": 6})


def _full_graph(builder):
    """What vLLM sets for FULL CUDA graphs (not constructible on CPU): explicit split bound."""
    builder.use_full_cuda_graph, builder.max_cudagraph_size, builder.max_num_splits = True, 512, 32


def test_full_graph_num_splits_reaches_metadata(install, tmp_path):
    """Mixed windows under FULL graphs: vLLM passes num_splits=32 and no metadata; ours uses 32."""
    _, expected, _ = _run(tmp_path, MIXED, patched=False, method=CAPTURE, tweak=_full_graph)
    install()
    known = set(ref._REGISTRY)
    _, got, counted = _run(tmp_path, MIXED, patched=True, method=CAPTURE, tweak=_full_graph)
    assert [c.get("metadata") for c in counted] == [3, 3]
    assert {state[18] for i, state in ref._REGISTRY.items() if i not in known} == {32}  # num_splits
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_live_max_below_the_table_span_is_exact(install, tmp_path):
    """Issue 15: vLLM passes the live maximum (6) while its block tables span 48 tokens; with window 8
    the fork's forward normalises the window against 6 ("no window"). vLLM's own metadata (uniform
    model) and ours (mixed windows, inside a capture) both agree with the strict reference."""
    install()
    for windows in ([8] * 3, [8, None, 8]):
        model = harness.make_model(harness.vllm_config(tmp_path), windows, _backend(True))
        before = stats.snapshot()
        harness.run_step(model, harness.make_batch([1, 1], [6, 5], 3), CAPTURE)
        d = _delta(before)
        assert "fa3_rejected" not in d["passthrough"] and d["calls"] == 3, d
    assert not adapter._native
