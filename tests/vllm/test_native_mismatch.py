"""``native_mismatch``: when vLLM's own metadata was computed for other parameters than the call's."""

import pytest
import torch

pytest.importorskip("vllm")

from attn_sched_plugin import activation  # noqa: E402
from attn_sched_plugin.adapters import vllm as adapter  # noqa: E402

pytestmark = pytest.mark.vllm


def call(**over):
    kw = dict(q=torch.zeros(4, 8, 128), k=torch.zeros(10, 16, 2, 128), v=torch.zeros(10, 16, 2, 128),
              block_table=torch.zeros(2, 4, dtype=torch.int32), max_seqlen_k=64, window_size=[-1, -1],
              softcap=0.0, scheduler_metadata=torch.zeros(9, dtype=torch.int32), fa_version=3)
    kw.update(over)
    return kw


@pytest.mark.parametrize("over, reason", [
    ({}, None),
    ({"scheduler_metadata": None, "v": torch.zeros(10, 16, 2, 64)}, None),  # ours to compute, not vLLM's
    ({"fa_version": 2, "softcap": 30.0}, None),
    ({"v": torch.zeros(10, 16, 2, 64)}, "headdim_v"),
    ({"v": torch.zeros(10, 16, 2, 64), "q_v": torch.zeros(4, 8, 64)}, None),  # MLA-style qv: not this check
    ({"softcap": 30.0}, "has_softcap"),
    # vLLM's fork schedules with the call's max_seqlen_k, which is what vLLM's builder passes: consistent
    ({"window_size": [40, 0], "max_seqlen_k": 20}, None),
])
def test_native_mismatch(over, reason):
    assert adapter.native_mismatch(call(**over)) == reason


def test_uninstall_restores_everything(install):
    import importlib

    from attn_sched_plugin.adapters import vllm_targets as targets

    fa = importlib.import_module(targets.FA_MODULE)
    before = (fa.flash_attn_varlen_func, dict(vars(fa.FlashAttentionMetadataBuilder)))
    report = install()
    assert fa.flash_attn_varlen_func is before[0]  # routed only while graphs are captured
    adapter._routes[0].capture()
    assert fa.flash_attn_varlen_func is not before[0]
    activation.uninstrument("vllm")
    assert fa.flash_attn_varlen_func is before[0]
    assert dict(vars(fa.FlashAttentionMetadataBuilder)) == before[1]
    for line in report.wrapped:
        if line.startswith("register_backend("):
            name, path = line[len("register_backend("):].split(") -> ")
            registry = importlib.import_module(targets.registry_modules(report.version)[0])
            assert registry.AttentionBackendEnum[name].get_path() != path
