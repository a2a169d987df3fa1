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


# HookRegistry's private surface the adapter needs: its public one (register, apply_hooks) can neither
# apply one target now nor take a hook back (same shape in 0.5.11-0.5.23). name -> expected parameters
REGISTRY_PRIVATES = {"_apply_target": ("target", "hooks")}
REGISTRY_FUNCTIONS = {"_propagate_patch": ("original", "wrapped", "source_module")}


def check_hook_registry() -> list[str]:
    """What of HookRegistry's surface is missing or differently shaped (empty when all is there)."""
    try:
        module = pkgutil.resolve_name(HOOK_REGISTRY)
    except (ImportError, AttributeError, ValueError) as exc:
        return [f"cannot import {HOOK_REGISTRY} ({type(exc).__name__}: {exc})"]
    registry, hook_type = getattr(module, "HookRegistry", None), getattr(module, "HookType", None)
    if registry is None or hook_type is None:
        return [f"{HOOK_REGISTRY} has no HookRegistry/HookType"]
    problems = [f"HookType.{t} missing" for t in ("BEFORE", "AROUND") if not hasattr(hook_type, t)]
    if not callable(getattr(registry, "register", None)):
        problems.append("HookRegistry.register missing")
    if not isinstance(getattr(registry, "_hooks", None), dict):
        problems.append("HookRegistry._hooks is not a dict of target -> hooks")
    if not isinstance(getattr(registry, "_patched", None), set):
        problems.append("HookRegistry._patched is not a set")
    for owner, name, leading in [(registry, n, p) for n, p in REGISTRY_PRIVATES.items()] + [
            (module, n, p) for n, p in REGISTRY_FUNCTIONS.items()]:
        fn = getattr(owner, name, None)
        why = "missing" if fn is None else check_params(fn, leading)
        if why is not None:
            problems.append(f"{HOOK_REGISTRY}.{name}: {why}")
    return problems


def torch_compile_max_bs() -> int | None:
    """The largest batch size SGLang captures under torch.compile (0 when off); None if unreadable.

    Under torch.compile dynamo traces FA3 itself, so our wrapper serves none of those calls.
    """
    try:
        try:
            from sglang.srt.runtime_context import get_flags  # 0.5.16+
        except ImportError:  # 0.5.11-0.5.15
            from sglang.srt.server_args import get_global_server_args

            args = get_global_server_args()
            return int(args.torch_compile_max_bs) if args.enable_torch_compile else 0
        if not get_flags().capture.enable_torch_compile:
            return 0
        try:
            from sglang.srt.runtime_context import get_exec  # 0.5.23
        except ImportError:
            from sglang.srt.runtime_context import get_server_args

            return int(get_server_args().torch_compile_max_bs)
        return int(get_exec().graph.torch_compile_max_bs)
    except Exception:  # noqa: BLE001 - unreadable: the caller keeps SGLang's precompute
        return None
