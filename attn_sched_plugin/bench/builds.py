"""Finding a real FA3 build to run: its forward surface beside its ``providers.Build``."""

from __future__ import annotations

import importlib
import os
from typing import Callable, NamedTuple

import torch

from ..binding import VARLEN
from ..providers import BUILDS, Build, provider_from_library


class FA3Build(NamedTuple):
    name: str
    forward: Callable  # the build's Python entry bench calls (through ``fa3.convention``)
    fa3: Build
    paged: bool  # built with paged KV (the fa3-fwd wheel is not)


class NoBuild(Exception):
    """No usable FA3 build; the message says what was tried and what is accepted."""


ACCEPTED = ("vllm (the vllm package), vllm-lib:PATH (a _vllm_fa3_C.abi3.so), sgl_kernel (the sglang-kernel wheel), "
            "fa3_fwd (the fa3-fwd wheel)")


def vllm_library(path: str) -> FA3Build:
    torch.ops.load_library(path)
    from . import vllm_fa3

    return FA3Build(f"vllm-lib:{os.path.basename(path)}", vllm_fa3.flash_attn_varlen_func,
                    Build(provider_from_library(path, "_vllm_fa3_C"), VARLEN, path), paged=True)


def vllm_package() -> FA3Build:
    interface = importlib.import_module("vllm.vllm_flash_attn.flash_attn_interface")
    return FA3Build("vllm", interface.flash_attn_varlen_func, BUILDS["vllm_flash_attn"], paged=True)


def sgl_kernel() -> FA3Build:
    """SGLang's FA3 (the sglang-kernel wheel), through its own ``flash_attn_with_kvcache``."""
    interface = importlib.import_module("sgl_kernel.flash_attn")
    return FA3Build("sgl_kernel", interface.flash_attn_with_kvcache, BUILDS["sgl_kernel"], paged=True)


def fa3_fwd() -> FA3Build:
    interface = importlib.import_module("fa3_fwd_interface")
    return FA3Build("fa3_fwd", interface.flash_attn_with_kvcache, BUILDS["fa3_fwd"], paged=False)


def load(spec: str | None = None) -> FA3Build:
    """``spec``: one of ACCEPTED, or None for the first that loads (``ATTN_SCHED_FA3_LIB`` first)."""
    if spec is None:
        spec = f"vllm-lib:{os.environ['ATTN_SCHED_FA3_LIB']}" if os.environ.get("ATTN_SCHED_FA3_LIB") else None
    candidates = [spec] if spec else ["vllm", "fa3_fwd"]
    errors = []
    for candidate in candidates:
        try:
            if candidate.startswith("vllm-lib:"):
                return vllm_library(candidate.removeprefix("vllm-lib:"))
            if candidate == "vllm":
                return vllm_package()
            if candidate == "fa3_fwd":
                return fa3_fwd()
            if candidate == "sgl_kernel":
                return sgl_kernel()
            errors.append(f"{candidate!r} is not a build name")
        except (ImportError, OSError, RuntimeError) as exc:
            errors.append(f"{candidate}: {exc}")
    raise NoBuild(f"no usable FA3 build ({'; '.join(errors)}); accepted: {ACCEPTED}")
