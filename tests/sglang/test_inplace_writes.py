"""Batch tensors written in place after a capture, the way sgl_kernel's ops write (``Tensor(a!)``).

SGLang writes ``cache_seqlens`` / ``cu_seqlens_*`` only in its metadata callbacks (docs/coverage-sglang.md),
and sgl_kernel's and Triton's kernels leave the version counter as it was, so the reuse key cannot see
such a write: the callback after a capture must end the step, even when another plugin rebound the
FA3 entry over ours (releasing the route then leaves our wrapper in the path).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("sglang")
pytestmark = pytest.mark.sglang

from attn_sched_plugin import runtime  # noqa: E402
from attn_sched_plugin.adapters import sglang as adapter  # noqa: E402
from tests.reference import engine_ops, fa3_reference as ref  # noqa: E402
from tests.sglang.test_backend_cpu import (  # noqa: E402,F401  (fixtures)
    B, D, H, HK, PAGE, PAGES_PER_SEQ, _backend, _enter, _layer, _metadata, fa3_on_cpu)

_write = engine_ops.unversioned_writer("attn_sched_test_sgl_kernel", "cache_seqlens")  # as sgl_kernel registers


def _two_calls(module, between) -> list[torch.Tensor]:
    """A full-attention decode layer, ``between()`` (callbacks and the write), the layer again."""
    gen = torch.Generator().manual_seed(5)
    kv = [torch.randn(B * PAGES_PER_SEQ * PAGE, HK, D, generator=gen) for _ in range(2)]
    pool = SimpleNamespace(get_kv_buffer=lambda layer_id: (kv[0], kv[1]))
    md = _metadata(module, [11, 17, 29], gen)
    backend = _backend(module, pool, md)
    batch = SimpleNamespace(batch_size=B, spec_info=None, _attn_output=None, out_cache_loc=None, token_to_kv_pool=pool)
    layer = _layer(0, -1, module.AttentionType.DECODER)
    q = torch.randn(B, H * D, generator=gen)
    first = backend.forward_decode(q, None, None, layer, batch, save_kv_cache=False)
    version = md.cache_seqlens_int32._version
    between()
    _write(md.cache_seqlens_int32, torch.tensor([12, 18, 29], dtype=torch.int32))
    assert md.cache_seqlens_int32._version == version
    return [first, backend.forward_decode(q, None, None, layer, batch, save_kv_cache=False)]


def test_the_callback_after_a_capture_ends_the_step(fa3_on_cpu, monkeypatch):
    runtime.new_step()
    expected = _two_calls(fa3_on_cpu, lambda: None)
    assert adapter.install(build=ref.build()).active
    try:
        _enter("capture")
        ours = fa3_on_cpu.flash_attn_with_kvcache
        monkeypatch.setattr(fa3_on_cpu, "flash_attn_with_kvcache", functools.wraps(ours)(lambda *a, **k: ours(*a, **k)))
        got = _two_calls(fa3_on_cpu, lambda: _enter("replay"))
        tally = runtime.state().tally
        assert "fa3_rejected" not in tally.passthrough, "metadata from before the write was reused"
        assert tally.computed == 1 and tally.injected == 1  # the second call's own, fresh metadata
    finally:
        monkeypatch.undo()
        adapter.uninstall()
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
