"""Remove from an engine's site what a Hopper server of a dense model never loads.

Why: a transfer to the GPU machine carries at most 64 MiB, so every file an H100/H200 server
cannot use is a cost. Each rule names a file the engine imports lazily, under try/except, or
only for other GPUs, models or features; the FA3 libraries themselves are shipped unmodified.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fatbin import keep_arch


@dataclass(frozen=True)
class Trim:
    remove: dict[str, str]  # glob under the site -> why it can go
    fatbin_sm90: tuple[str, ...] = ()  # libraries whose device code is cut to what sm90 loads
    strip_debug: tuple[str, ...] = ()  # libraries whose DWARF debug info is dropped


COMMON = {
    "bin": "console scripts; their shebangs point at the build machine",
    "share": "man pages",
}

TRIMS = {
    "vllm": Trim(
        remove={
            **COMMON,
            "build_backend.py": "flashinfer's wheel-build helper, never imported",
            "build_utils.py": "flashinfer's wheel-build helper, never imported",
            "vllm/vllm-rs": "Rust front end, only with VLLM_USE_RUST_FRONTEND=1",
            "vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so": "FA2, imported in try/except; sm90 picks FA3",
            "vllm/_flashmla_C.abi3.so": "FlashMLA (MLA models), try/except",
            "vllm/_flashmla_extension_C.abi3.so": "FlashMLA (MLA models), try/except",
            "vllm/_qutlass_C.abi3.so": "FP4 on Blackwell, suppress(ImportError)",
            "vllm/third_party/deep_gemm": "FP8 GEMM/MoE; has_deep_gemm() then reports False",
            "vllm/third_party/fmha_sm100": "Blackwell only",
            "vllm/third_party/tml_fa4": "Blackwell only",
        },
        fatbin_sm90=("vllm/_C_stable_libtorch.abi3.so", "vllm/_moe_C_stable_libtorch.abi3.so"),  # MoE ops: gpt-oss-like
    ),
    "sglang": Trim(
        remove={
            **COMMON,
            "tools": "sglang's build helper",
            "sgl_kernel/sm100": "load_utils loads sm90/common_ops on compute capability 9.0",
            "sgl_kernel/infllm_ops*.so": "InfLLM-v2 attention only, lazy loader",
            "sgl_kernel/flashmla_ops.abi3.so": "FlashMLA (DeepSeek MLA) only, import guarded",
            "xgrammar/lib": "static library for C++ users",
        },
        fatbin_sm90=("sgl_kernel/sm90/common_ops.abi3.so",),
        strip_debug=("xgrammar/libxgrammar_bindings.so",),
    ),
}


def trim(site: Path, engine: str) -> list[str]:
    """Apply the engine's rules to ``site``; return one line per rule saying what it did."""
    rules = TRIMS[engine]
    done = []
    for pattern, why in rules.remove.items():
        hits = sorted(site.glob(pattern))
        for hit in hits:
            shutil.rmtree(hit) if hit.is_dir() and not hit.is_symlink() else hit.unlink()
        done.append(f"removed {pattern} ({len(hits)} path(s)): {why}")
    for lib in rules.fatbin_sm90:
        sizes = keep_arch(site / lib)
        done.append(f"sm90 device code only in {lib}: {sizes['bytes_before']} -> {sizes['bytes_after']} fatbin bytes")
    for lib in rules.strip_debug:
        subprocess.run(["strip", "--strip-debug", str(site / lib)], check=True)
        done.append(f"stripped debug info from {lib}")
    return done
