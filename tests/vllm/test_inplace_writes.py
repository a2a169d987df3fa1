"""Batch tensors written in place between two FA3 calls of one captured step, as vLLM's drafters do.

vLLM's EAGLE loop advances ``seq_lens`` with a Triton kernel (``eagle_step_update_slot_mapping_and_metadata``;
model runner v2: ``_update_draft_inputs_kernel``), then rebuilds its metadata (``build_for_drafting`` /
``update_draft_decode_metadata``) before the next draft forward. Kernels of that kind, and ops registered
like vLLM's ``_C`` ones (``Tensor(a!)``), leave the version counter as it was, so the reuse key cannot see
the write: the rebuild must end the step. The reference FA3 rejects metadata computed for other lengths.
"""

import functools
import importlib

import pytest
import torch

pytest.importorskip("vllm")

from attn_sched_plugin import runtime  # noqa: E402
from attn_sched_plugin.adapters import vllm_targets as targets  # noqa: E402
from tests.reference import engine_ops, fa3_reference as ref  # noqa: E402
from tests.vllm import harness  # noqa: E402
from tests.vllm.test_drive import MIXED, _backend  # noqa: E402

pytestmark = pytest.mark.vllm

_write = engine_ops.unversioned_writer("attn_sched_test_vllm_c", "seq_lens")  # as vLLM's _C registers


def _draft_two_steps(tmp_path, patched: bool, rebind=None) -> list[torch.Tensor]:
    """A captured draft step, the in-place ``seq_lens`` write, the drafter's rebuild, the next draft step."""
    model = harness.make_model(harness.vllm_config(tmp_path), MIXED, _backend(patched))
    common = harness.make_batch([1, 1, 1], [30, 17, 48], 3)
    outs = harness.run_step(model, common, "build_for_cudagraph_capture", seed=0)
    if rebind is not None:
        rebind()
    version = common.seq_lens._version
    _write(common.seq_lens, torch.tensor([31, 18, 48], dtype=torch.int32))
    assert common.seq_lens._version == version and common.seq_lens.tolist() == [31, 18, 48]
    return outs + harness.run_step(model, common, "build_for_drafting", seed=1)


def test_a_drafter_rebuild_after_an_unversioned_write_ends_the_step(install, tmp_path, monkeypatch):
    """Another plugin rebinds the FA3 entry over ours during the capture (so releasing the route cannot
    take our wrapper out of the path): the rebuild must still drop the pre-write metadata."""
    expected = _draft_two_steps(tmp_path, patched=False)
    install()
    fa = importlib.import_module(targets.FA_MODULE)

    def rebind():
        ours = fa.flash_attn_varlen_func
        monkeypatch.setattr(fa, "flash_attn_varlen_func", functools.wraps(ours)(lambda *a, **k: ours(*a, **k)))

    ref.COUNTERS.clear()
    got = _draft_two_steps(tmp_path, patched=True, rebind=rebind)
    tally = runtime.state().tally
    assert "fa3_rejected" not in tally.passthrough, "metadata from before the write was reused"
    assert tally.computed == 3 and ref.COUNTERS.get("prepare", 0) == 0  # fresh metadata per window config
    assert all(torch.equal(a, b) for a, b in zip(got, expected)) and len(got) == len(expected)
