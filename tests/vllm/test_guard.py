"""The guard against vLLM's own metadata bugs, through the real FlashAttentionMetadataBuilder and
FlashAttentionImpl.forward on CPU (the reference FA3 refuses metadata computed for other parameters).

vLLM #54374: a sliding-window drafter got AOT metadata for another window (vLLM picks the AOT window
by scanning every FlashAttention layer of the model, so a drafter that is the only FA consumer, or a
scan over the wrong group, gives its builder a window its layers do not run). The builder's AOT window
is set here to what that scan produced (full attention) for layers that run an 8-token window.
"""

import pytest
import torch

pytest.importorskip("vllm")

from attn_sched_plugin import stats, switches  # noqa: E402
from tests.reference import fa3_reference as ref  # noqa: E402
from tests.vllm import harness  # noqa: E402
from tests.vllm.test_drive import CAPTURE, STEPS, _backend  # noqa: E402

pytestmark = pytest.mark.vllm

WINDOWED = [8, 8, 8]  # one window config: vLLM keeps AOT metadata on


def _window_of_another_group(builder):
    builder.aot_sliding_window = (-1, -1)  # what the model-wide scan found; the layers run (7, 0)


def _full_graph_buffer(builder):
    """FULL CUDA graphs (not constructible on CPU): vLLM's persistent buffer and split bound."""
    _window_of_another_group(builder)
    builder.use_full_cuda_graph, builder.max_cudagraph_size, builder.max_num_splits = True, 512, 32
    builder.scheduler_metadata = torch.zeros(1 + 4 * 4, dtype=torch.int32)


def _step(tmp_path, tweak, patched=True, aot=True):
    model = harness.make_model(harness.vllm_config(tmp_path), WINDOWED, _backend(patched))
    tweak(model.builder)
    model.builder.aot_schedule = aot
    return harness.run_step(model, harness.make_batch(*STEPS[0], 3, seed=0), CAPTURE, seed=0)


@pytest.mark.parametrize("tweak", [_window_of_another_group, _full_graph_buffer], ids=["piecewise", "full-graph"])
def test_windowed_drafter_metadata_for_another_window(install, tmp_path, monkeypatch, tweak):
    expected = _step(tmp_path, tweak, patched=False, aot=False)  # FA3 scheduling itself
    with pytest.raises(RuntimeError, match="computed for other parameters"):
        _step(tmp_path, tweak, patched=False)  # the bug, without the plugin
    monkeypatch.setattr(switches, "_current", switches.Switches({"ATTN_SCHED_GUARD": "off"}))
    install()
    with pytest.raises(RuntimeError, match="computed for other parameters"):
        _step(tmp_path, tweak)  # the plugin with its guard off passes vLLM's metadata through
    monkeypatch.setattr(switches, "_current", switches.Switches({}))
    install()
    before = stats.snapshot()["engine"].get("vllm", {}).get("guard_window", 0)
    ref.COUNTERS.clear()
    got = _step(tmp_path, tweak)
    assert all(torch.equal(a, b) for a, b in zip(got, expected)) and len(got) == len(expected)
    assert ref.COUNTERS["prepare"] == 0  # no layer scheduled itself: exact metadata replaced vLLM's
    assert stats.snapshot()["engine"]["vllm"]["guard_window"] == before + len(WINDOWED)
    assert f"guard_window={before + len(WINDOWED)}" in stats.summary_line()


def test_vllm_metadata_for_the_right_window_is_kept(install, tmp_path):
    install()
    before = stats.snapshot()["engine"].get("vllm", {})
    ref.COUNTERS.clear()
    _step(tmp_path, lambda builder: None)
    assert ref.COUNTERS["metadata"] == 1 and ref.COUNTERS["prepare"] == 0  # vLLM's own, shared by every layer
    assert stats.snapshot()["engine"].get("vllm", {}) == before
