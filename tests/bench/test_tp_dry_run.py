"""CPU (gloo) dry run of ``attn-sched bench --tp``'s process layout with the reference FA3: each rank
shards the heads, all-reduces between layers, computes its metadata on its own device, once per
distinct shape per step, with outputs bitwise equal to FA3 alone."""

from __future__ import annotations

import pytest
import torch

from attn_sched_plugin.bench.tp import run_ranks


def reference_build():
    """Module-level (picklable for spawn): the CPU reference FA3 as a paged bench build."""
    from attn_sched_plugin.bench.builds import FA3Build
    from tests.reference import fa3_reference as ref

    return FA3Build("reference", ref.flash_attn_varlen_func, ref.vllm_build(), paged=True)


@pytest.mark.parametrize("world", [2])
def test_tp_layout_dry_run(world):
    points = [("qwen3-32b-tp4", "decode", 2, 48), ("gpt-oss-120b-like", "verify", 2, 40)]
    results = run_ranks(world, reference_build, points, replays=0, device_type="cpu")
    assert len(results) == world * len(points)
    for r in results:
        assert r["bitwise_equal_to_fa3"] == {"engine": True, "plugin": True}
        assert r["computed"] == r["distinct_shapes"]  # one metadata per shape per step, per rank
        assert r["metadata_devices"] == ["cpu"]
    full = {"qwen3-32b-tp4": 64, "gpt-oss-120b-like": 64}
    for r in results:
        assert r["heads"] == full[r["preset"]] // world
