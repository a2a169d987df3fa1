"""Run in a fresh interpreter: make FA3 look present (unless told not to), let vLLM's real
``load_general_plugins()`` load plugins, and print what ended up patched as one JSON line."""

import json
import os

import importlib
import importlib.util

import torch

import vllm.plugins
from attn_sched_plugin.adapters import vllm_targets as targets

VERSION = targets.installed_version()
ENTRY_MODULES = [m for m in (targets.FA_MODULE, targets.DIFFKV_MODULE) if importlib.util.find_spec(m)]

if os.environ.get("PROBE_NO_FA3") != "1":
    from tests.vllm import standin
    for name in ENTRY_MODULES:
        importlib.import_module(name).flash_attn_varlen_func = standin.make_varlen()

vllm.plugins.load_general_plugins()
if os.environ.get("PROBE_TWICE") == "1":
    from attn_sched_plugin.entrypoints import vllm_plugin

    vllm_plugin()

from attn_sched_plugin import activation  # noqa: E402
from attn_sched_plugin.adapters import vllm as adapter  # noqa: E402
from attn_sched_plugin.interceptor import is_wrapped  # noqa: E402

report = activation.installed().get("vllm")


def depth(fn) -> int:
    """Marked layers above the original entry (our native check + the interceptor = 2)."""
    n = 0
    while is_wrapped(fn):
        n, fn = n + 1, fn.__wrapped__
    return n


builder = importlib.import_module(targets.FA_MODULE).FlashAttentionMetadataBuilder
registries = [importlib.import_module(m) for m in targets.registry_modules(VERSION) if importlib.util.find_spec(m)]
enum = registries[0].AttentionBackendEnum if registries else None
print(json.dumps({
    "loaded": "vllm" in activation.installed(),
    "report": None if report is None else report.as_dict(),
    "version": VERSION,
    # routed: the wrapper each module's FA3 entry points at while graphs are captured (depth per module)
    "routes": {r.module.__name__: depth(r.wrapped) for r in adapter._routes},
    "route_count": len(adapter._routes),
    # outside captures every module calls FA3 itself
    "entries_untouched": not any(is_wrapped(getattr(importlib.import_module(m), targets.FA3_ENTRY, None))
                                 for m in ENTRY_MODULES),
    "overrides": {} if enum is None else {n: enum[n].get_path() for n in targets.OVERRIDES if n in enum.__members__},
    "step_methods": [n for n in targets.STEP_METHODS if hasattr(builder, n)],
    "builder_patched": [n for n in targets.STEP_METHODS if getattr(getattr(builder, n, None), adapter.STEP_MARK, False)],
    "cuda_initialized": torch.cuda.is_initialized(),
}))
