"""A Triton kernel rewriting ``cache_seqlens`` between layers inside one captured graph (issue 22).

That is what speculative drafters do inside their captures (vLLM's ``seq_lens`` kernels between draft
forwards: docs/coverage-vllm.md). Triton writes leave the version counter as it was, so the reuse key
cannot see them; the adapters end the step at the engine's metadata rebuild that follows such a write
(here: ``runtime.new_step()`` at the write). The control without it shows the hazard is real.
"""

from __future__ import annotations

import functools

import pytest
import torch

from attn_sched_plugin import runtime
from attn_sched_plugin.bench.presets import PRESETS
from attn_sched_plugin.bench.step import Step
from attn_sched_plugin.bench.timing import capture
from attn_sched_plugin.verify import bitwise_equal

pytestmark = pytest.mark.gpu
WRITE_AT, REPLAYS = 2, 200


@functools.lru_cache(maxsize=1)
def _halve_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def halve(ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(ptr + offs, mask=mask)
        tl.store(ptr + offs, x // 2 + 1, mask=mask)

    return halve, triton.next_power_of_2


def _halve(lengths: torch.Tensor) -> None:
    kernel, pow2 = _halve_kernel()
    kernel[(1,)](lengths, lengths.numel(), BLOCK=pow2(lengths.numel()))


def _layers(step: Step, variant: str, ends_step: bool) -> None:
    """Every layer; before layer ``WRITE_AT`` the Triton write (and, with ``ends_step``, the step ends)."""
    fn = step.wrapped if variant == "plugin" else step.build.forward
    if variant == "plugin":
        runtime.new_step()
    for layer in range(step.preset.layers):
        if layer == WRITE_AT:
            _halve(step.cache_seqlens)
            if variant == "plugin" and ends_step:
                runtime.new_step()
        fn(**step.layer_kwargs(layer), out=step.out[variant][layer])


@pytest.mark.parametrize("ends_step", [True, False], ids=["step-ended-at-write", "control-no-step-end"])
def test_triton_write_between_layers_in_a_capture(vllm_build, record, ends_step):
    p = PRESETS["qwen3-32b-tp4"]._replace(layers=4)
    step = Step(p, vllm_build, 8, 2048, 1, torch.device("cuda"))
    step.set_lengths(seed=1)
    version = step.cache_seqlens._version
    _halve(step.cache_seqlens)
    torch.cuda.synchronize()
    assert step.cache_seqlens._version == version  # the key cannot see a Triton write
    graph = capture(lambda: _layers(step, "plugin", ends_step))
    mismatches = 0
    for r in range(REPLAYS):
        step.set_lengths(seed=100 + r)
        graph.replay()
        step.set_lengths(seed=100 + r)
        _layers(step, "fa3", ends_step)
        mismatches += not bitwise_equal(step.out["plugin"], step.out["fa3"])
    torch.cuda.synchronize()
    record(replays=REPLAYS, mismatches=mismatches)
    if ends_step:
        assert mismatches == 0
    else:  # stale metadata for the layers after the write: the hazard the adapters' step ends prevent
        assert mismatches > 0
