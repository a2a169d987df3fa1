"""GPU tests: real FA3 builds on a Hopper GPU. Skipped elsewhere, unless ATTN_SCHED_GPU_REQUIRED=1
(set on the GPU machine), which turns every would-be skip into a failure so a missing build can
never pass as green. Each test records its numbers; the session writes them to
$ATTN_SCHED_GPU_RESULTS (a JSON file) for committing under benchmarks/results/."""

from __future__ import annotations

import json
import os
import platform

import pytest
import torch

REQUIRED = os.environ.get("ATTN_SCHED_GPU_REQUIRED") == "1"
RECORDS: dict = {}


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"GPU test could not run: {reason}")
    pytest.skip(reason)


def _build(loader):
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9:
        _unavailable("needs a Hopper GPU")
    try:
        return loader()
    except Exception as exc:  # noqa: BLE001 - the reason is reported
        _unavailable(f"FA3 build not loadable: {exc}")


@pytest.fixture(scope="session")
def vllm_build():
    from attn_sched_plugin.bench import builds

    path = os.environ.get("ATTN_SCHED_FA3_LIB")
    return _build(lambda: builds.vllm_library(path) if path else builds.vllm_package())


@pytest.fixture(scope="session")
def sgl_kernel_build():
    from attn_sched_plugin.bench import builds

    return _build(builds.sgl_kernel)


@pytest.fixture(scope="session")
def fa3fwd_build():
    from attn_sched_plugin.bench import builds

    return _build(builds.fa3_fwd)


@pytest.fixture
def record(request):
    """``record(**numbers)``: keep this test's numbers for the results file."""
    entry = RECORDS.setdefault(request.node.nodeid, {})
    return entry.update


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("ATTN_SCHED_GPU_RESULTS")
    if not path or not RECORDS:
        return
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}
    if torch.cuda.is_available():
        env["card"] = torch.cuda.get_device_name()
    with open(path, "w") as f:
        json.dump({"environment": env, "exitstatus": int(exitstatus), "tests": RECORDS}, f, indent=1)
