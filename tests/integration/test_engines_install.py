"""integration/engines/install.sh on a tiny fake part set (CPU, no network): it refuses damaged,
missing or foreign parts with one line, unpacks once, and installs this checkout's plugin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.engines_modules import ENGINES, load

pack = load("pack")
NAME = "vllm-9.9.9"


def _fake_site(root: Path, version: str = "9.9.9") -> Path:
    site = root / "fake-site"
    info = site / f"vllm-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n")
    (site / "payload.bin").write_bytes(os.urandom(3000))  # incompressible: several parts of 1 KiB
    return site


@pytest.fixture
def parts(tmp_path) -> Path:
    out = tmp_path / "parts" / NAME
    pack.pack(_fake_site(tmp_path), out, NAME, [], tmp_path / "a.tar.xz", limit=1024)
    assert len(list(out.glob("part-*"))) >= 3
    return out


def _install(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ENGINES_ROOT=str(tmp_path / "engines"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # python3 = this Python
    return subprocess.run(["bash", str(ENGINES / "install.sh"), *args], capture_output=True, text=True, env=env,
                          timeout=300)


def _one_line_failure(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("install.sh: "), done.stderr
    return lines[0]


def test_damaged_part_is_refused_naming_it(tmp_path, parts):
    data = bytearray((parts / "part-ab").read_bytes())
    data[100] ^= 0xFF
    (parts / "part-ab").write_bytes(bytes(data))
    line = _one_line_failure(_install(tmp_path, NAME, str(parts)))
    assert "part-ab" in line and "checksum mismatch" in line and "part-aa" not in line
    assert not (tmp_path / "engines" / NAME / "site").exists()


def test_missing_parts_are_named_with_how_many_arrived(tmp_path, parts):
    total = len(list(parts.glob("part-*")))
    (parts / "part-ab").unlink()
    line = _one_line_failure(_install(tmp_path, NAME, str(parts)))
    assert "lacks part-ab " in line and f"({total - 1} of {total} parts here)" in line


def test_parts_that_check_out_but_do_not_unpack_are_one_line(tmp_path, parts):
    """A part damaged before its checksum was taken (a broken build) fails in xz: still one line."""
    for part in parts.glob("part-*"):
        part.write_bytes(b"not xz data")
    (parts / "SHA256SUMS").write_text("".join(f"{pack.sha256(p)}  {p.name}\n" for p in sorted(parts.glob("part-*"))))
    line = _one_line_failure(_install(tmp_path, NAME, str(parts)))
    assert f"unpacking {NAME} into " in line and "failed: xz:" in line
    assert not (tmp_path / "engines" / NAME / "site").exists()


def test_parts_of_another_build_are_refused(tmp_path, parts):
    line = _one_line_failure(_install(tmp_path, "vllm-9.9.8", str(parts)))
    assert f"are {NAME}, not vllm-9.9.8" in line


@pytest.mark.parametrize("name", ["tensorrt-1.0", "vllm"])
def test_unknown_engine_is_refused(tmp_path, parts, name):
    assert "accepted: sglang-<version>, vllm-<version>" in _one_line_failure(_install(tmp_path, name, str(parts)))


def test_no_parts_and_nothing_unpacked_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "no SHA256SUMS in" in _one_line_failure(_install(tmp_path, NAME, str(tmp_path / "empty")))


@pytest.fixture(scope="module")
def can_build_wheels():
    """install.sh builds the plugin wheel with this Python's own setuptools (no network)."""
    import importlib.metadata as md

    try:
        major, minor = (int(x) for x in md.version("setuptools").split(".")[:2])
    except md.PackageNotFoundError:
        major, minor = 0, 0
    if (major, minor) < (77, 0):
        pytest.skip("install.sh's plugin wheel needs setuptools>=77 in this Python (the GPU machine has it)")


def test_install_unpacks_once_and_installs_the_plugin(tmp_path, parts, can_build_wheels):
    site = tmp_path / "engines" / NAME / "site"
    first = _install(tmp_path, NAME, str(parts))
    assert first.returncode == 0, first.stderr
    assert (site / "payload.bin").read_bytes() == (tmp_path / "fake-site" / "payload.bin").read_bytes()
    assert "ready: vllm 9.9.9 + attn-sched-plugin" in first.stdout
    assert (site / "attn_sched_plugin" / "__init__.py").is_file()
    assert (tmp_path / "engines" / NAME / "env.sh").read_text() == (ENGINES / "env.sh").read_text()

    (site / "sentinel").write_text("kept")  # a second run with the same parts must not unpack again
    again = _install(tmp_path, NAME, str(parts))
    assert again.returncode == 0, again.stderr
    assert "parts already unpacked" in again.stdout and (site / "sentinel").exists()

    shutil.rmtree(parts)  # later calls need not carry the parts at all
    later = _install(tmp_path, NAME, str(parts))
    assert later.returncode == 0, later.stderr
    assert "keeping the site unpacked earlier" in later.stdout and (site / "sentinel").exists()


def test_new_parts_replace_the_site(tmp_path, parts, can_build_wheels):
    assert _install(tmp_path, NAME, str(parts)).returncode == 0
    site = tmp_path / "engines" / NAME / "site"
    (site / "sentinel").write_text("old")
    payload = site / "payload.bin"
    newer = tmp_path / "newer"
    pack.pack(_fake_site(newer), parts, NAME, [], tmp_path / "b.tar.xz", limit=1024)
    done = _install(tmp_path, NAME, str(parts))
    assert done.returncode == 0, done.stderr
    assert not (site / "sentinel").exists()
    assert payload.read_bytes() == (newer / "fake-site" / "payload.bin").read_bytes()


def _env_after_sourcing(tmp_path: Path, name: str) -> dict[str, str]:
    engine = tmp_path / name
    (engine / "site").mkdir(parents=True)
    shutil.copy(ENGINES / "env.sh", engine / "env.sh")
    out = subprocess.run(["bash", "-c", f'set -euo pipefail; source "{engine}/env.sh"; env -0'], capture_output=True,
                         env={"PATH": os.environ["PATH"], "PYTHONPATH": "/elsewhere", "CUDA_HOME": str(tmp_path)},
                         check=True).stdout
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


@pytest.mark.parametrize("name", ["vllm-0.26.0", "sglang-0.5.16"])
def test_env_sh_puts_the_site_first_and_keeps_multicast_off(tmp_path, name):
    env = _env_after_sourcing(tmp_path, name)
    assert env["PYTHONPATH"] == f"{tmp_path / name / 'site'}:/elsewhere"
    assert (env["NCCL_NVLS_ENABLE"], env["TORCH_SYMM_MEM_DISABLE_MULTICAST"], env["NVSHMEM_DISABLE_NVLS"]) == ("0", "1", "1")
    assert env["HF_HUB_OFFLINE"] == "1" and env["CUDA_HOME"] == str(tmp_path)
    vllm_only = ("VLLM_ALLREDUCE_USE_SYMM_MEM", "VLLM_FLASHINFER_ALLREDUCE_BACKEND")
    if name.startswith("vllm"):
        assert (env[vllm_only[0]], env[vllm_only[1]]) == ("0", "trtllm") and "SGLANG_USE_SGL_FA3_KERNEL" not in env
    else:
        assert env["SGLANG_USE_SGL_FA3_KERNEL"] == "1" and not set(vllm_only) & set(env)
