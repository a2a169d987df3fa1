"""What the SGLang adapter patches, per SGLang API era, and how a target is checked before patching.

Three eras (read from the released wheels): 0.5.11-0.5.12 have the capture/replay CUDA-graph
callbacks, 0.5.13+ the out-of-graph/in-graph pair, and from 0.5.17 the FA3 dispatcher moved from
``sglang.jit_kernel`` to ``sglang.kernels.ops``. Nothing here imports SGLang at module import.
"""

from __future__ import annotations

import inspect
import pkgutil
from typing import NamedTuple

from packaging.requirements import Requirement
from packaging.version import Version

from . import packages

# 0.5.11 is the first release with sglang.srt.plugins (entry-point discovery + HookRegistry); 0.5.23 the
# newest whose source the adapter was checked against (pyproject's [sglang] extra says the same)
REQUIREMENT = Requirement("sglang>=0.5.11,<0.5.24")

BACKEND = "sglang.srt.layers.attention.flashattention_backend.FlashAttentionBackend"
HOOK_REGISTRY = "sglang.srt.plugins.hook_registry"

# metadata-init callbacks -> the leading parameters they must have (each tells the adapter the phase)
_INIT = {"init_forward_metadata": ("self", "forward_batch")}
_CUDA_GRAPH_OLD = {
    "init_forward_metadata_capture_cuda_graph": (
        "self", "bs", "num_tokens", "req_pool_indices", "seq_lens", "encoder_lens", "forward_mode", "spec_info"),
    "init_forward_metadata_replay_cuda_graph": (
        "self", "bs", "req_pool_indices", "seq_lens", "seq_lens_sum", "encoder_lens", "forward_mode", "spec_info",
        "seq_lens_cpu"),
}
_CUDA_GRAPH_NEW = {
    "init_forward_metadata_out_graph": ("self", "forward_batch", "in_capture"),
    "init_forward_metadata_in_graph": ("self", "forward_batch"),
}
# SGLang's own decode precompute, silenced in "replace" mode
PRECOMPUTE = ("_compute_scheduler_metadata", ("self", "batch_size", "max_seq_len_k", "cache_seqlens", "cu_seqlens_q"))
# the FA3 dispatcher must take at least these (the SGLang surface of flash_attn_with_kvcache)
FA3_PARAMS = ("q", "k_cache", "v_cache", "qv", "cache_seqlens", "page_table", "cu_seqlens_q", "max_seqlen_q",
              "causal", "window_size", "softcap", "scheduler_metadata", "num_splits", "ver")


class Era(NamedTuple):
    name: str
    first: Version
    fa3_entry: str  # dotted path of the dispatcher the backend calls
    callbacks: dict[str, tuple[str, ...]]


ERAS = (
    Era("0.5.11-0.5.12", Version("0.5.11"), "sglang.jit_kernel.flash_attention.flash_attn_with_kvcache",
        {**_INIT, **_CUDA_GRAPH_OLD}),
    Era("0.5.13-0.5.16", Version("0.5.13"), "sglang.jit_kernel.flash_attention.flash_attn_with_kvcache",
        {**_INIT, **_CUDA_GRAPH_NEW}),
    Era("0.5.17+", Version("0.5.17"), "sglang.kernels.ops.attention.flash_attention.flash_attn_with_kvcache",
        {**_INIT, **_CUDA_GRAPH_NEW}),
)


def installed_version() -> str | None:
    return packages.installed_version("sglang")


def parse(version: str) -> Version:
    """``version`` parsed; ``packages.UnreadableVersion`` (one line) if it is not PEP 440."""
    return packages.release(REQUIREMENT, version)


def era_for(version: Version) -> Era | None:
    """The API era of ``version`` (the newest era for unknown newer releases), None if too old."""
    if version < packages.lowest(REQUIREMENT):
        return None
    return [e for e in ERAS if version >= e.first][-1]


def resolve(target: str):
    """Import and return the object at dotted ``target`` (like HookRegistry does)."""
    owner, attr = target.rsplit(".", 1)
    return getattr(pkgutil.resolve_name(owner), attr)


def check_params(fn, leading: tuple[str, ...]) -> str | None:
    """Why ``fn`` does not start with parameters ``leading``, or None if it does."""
    try:
        names = tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError) as exc:
        return f"no signature ({exc})"
    if names[: len(leading)] != leading:
        return f"parameters {names[:len(leading)]} != expected {leading}"
    return None


def check_fa3_entry(fn) -> str | None:
    try:
        names = set(inspect.signature(fn).parameters)
    except (TypeError, ValueError) as exc:
        return f"no signature ({exc})"
    missing = [p for p in FA3_PARAMS if p not in names]
    return f"missing parameters {missing}" if missing else None


def method_targets(era: Era, mode: str) -> dict[str, tuple[str, ...]]:
    """Backend methods to patch in ``era`` -> expected leading parameters."""
    targets = dict(era.callbacks)
    if mode == "replace":
        targets[PRECOMPUTE[0]] = PRECOMPUTE[1]
    return targets
