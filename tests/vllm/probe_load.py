"""Run in a fresh interpreter: make FA3 look present (unless told not to), let vLLM's real
``load_general_plugins()`` load plugins, and print what ended up patched as one JSON line."""

import json
import os
import sys

import torch

import vllm.plugins

if os.environ.get("PROBE_NO_FA3") != "1":
    from tests.vllm import standin
    import vllm.v1.attention.backends.flash_attn as fa
    import vllm.v1.attention.backends.flash_attn_diffkv as diffkv

    fa.flash_attn_varlen_func = standin.make_varlen()
    diffkv.flash_attn_varlen_func = standin.make_varlen()

vllm.plugins.load_general_plugins()
if os.environ.get("PROBE_TWICE") == "1":
    from attn_sched_plugin.entrypoints import vllm_plugin

    vllm_plugin()

from attn_sched_plugin import activation  # noqa: E402
from attn_sched_plugin.adapters import vllm as adapter, vllm_targets as targets  # noqa: E402
from attn_sched_plugin.interceptor import is_wrapped  # noqa: E402
from vllm.v1.attention.backends.registry import AttentionBackendEnum  # noqa: E402

report = activation.installed().get("vllm")


def depth(fn) -> int:
    """Marked layers above the original entry (our check + the interceptor = 2)."""
    n = 0
    while is_wrapped(fn):
        n, fn = n + 1, fn.__wrapped__
    return n


builder = sys.modules[targets.FA_MODULE].FlashAttentionMetadataBuilder
print(json.dumps({
    "loaded": "vllm" in activation.installed(),
    "report": None if report is None else report.as_dict(),
    "entries": {m: is_wrapped(getattr(sys.modules[m], targets.FA3_ENTRY, None))
                for m in (targets.FA_MODULE, targets.DIFFKV_MODULE)},
    "wrap_depth": depth(getattr(sys.modules[targets.FA_MODULE], targets.FA3_ENTRY, None)),
    "overrides": {n: AttentionBackendEnum[n].get_path() for n in targets.OVERRIDES},
    "builder_patched": [n for n in targets.STEP_METHODS if getattr(getattr(builder, n, None), adapter.STEP_MARK, False)],
    "cuda_initialized": torch.cuda.is_initialized(),
}))
