"""SGLang test setup: a stub libcuda.so.1 (built with gcc) so SGLang's FA3 backend imports on CPU."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def stub_libcuda_dir(tmp_path_factory) -> Path:
    from tests.sglang.stub_libcuda import build

    return build(tmp_path_factory.mktemp("stub_libcuda")).parent


@pytest.fixture(scope="session")
def sglang_backend(stub_libcuda_dir):
    """The real ``flashattention_backend`` module, imported against the stub driver."""
    os.environ["SGLANG_USE_SGL_FA3_KERNEL"] = "1"
    ctypes.CDLL(str(stub_libcuda_dir / "libcuda.so.1"), mode=ctypes.RTLD_GLOBAL)
    import sgl_kernel  # noqa: F401  (SGLang's processes import it before load_plugins)
    from sglang.srt.layers.attention import flashattention_backend

    return flashattention_backend


@pytest.fixture
def subprocess_env(stub_libcuda_dir) -> dict:
    env = dict(os.environ)
    env.update(LD_LIBRARY_PATH=f"{stub_libcuda_dir}:{env.get('LD_LIBRARY_PATH', '')}", SGLANG_USE_SGL_FA3_KERNEL="1")
    for name in ("ATTN_SCHED_DISABLE", "SGLANG_PLUGINS", "ATTN_SCHED_SGLANG_MODE"):
        env.pop(name, None)
    return env
