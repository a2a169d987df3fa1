#!/usr/bin/env python3
"""Build, on a machine with network, the transfer parts of one engine for the offline GPU machine.

    python3 integration/engines/build_parts.py vllm-0.26.0 [--out .engines] [--work DIR]

Why: the GPU machine has torch 2.11 but no network, and each call carries at most 64 MiB. This
installs the wheels pinned in ``requirements/<engine>-<version>.txt`` (exactly what the machine
lacks, no dependencies resolved) for CPython 3.12 x86-64 into a site folder, trims it (trim.py),
and packs it into ``<out>/<engine>-<version>/part-aa ...`` + SHA256SUMS + manifest.json
(pack.py). ``install.sh`` unpacks them there. Binaries are never committed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from pack import pack
from trim import TRIMS, trim

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements"
# pip matches manylinux tags exactly: every glibc level up to the GPU machine's 2.39 that a wheel may use
MANYLINUX = [f"manylinux_2_{minor}_x86_64" for minor in range(39, 4, -1)] + ["manylinux2014_x86_64",
                                                                            "manylinux1_x86_64", "linux_x86_64"]


def known_builds() -> list[str]:
    return sorted(p.stem for p in REQUIREMENTS.glob("*.txt"))


def parse_name(name: str) -> str:
    """Return the engine of ``<engine>-<version>``, or exit with one line naming the accepted builds."""
    engine = name.split("-", 1)[0]
    if name not in known_builds() or engine not in TRIMS:
        raise SystemExit(f"build_parts.py: unknown build '{name}'; accepted: {', '.join(known_builds())}")
    return engine


def install_site(requirements: Path, site: Path) -> None:
    """Unpack the pinned cp312 wheels into ``site`` as ``pip install --target`` would, without dependencies."""
    if site.exists():
        shutil.rmtree(site)
    tags = [arg for tag in MANYLINUX + ["any"] for arg in ("--platform", tag)]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                    "--abi", "cp312", "--abi", "abi3", "--abi", "none", *tags,
                    "--target", str(site), "-r", str(requirements)], check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help=f"<engine>-<version>; one of {', '.join(known_builds())}")
    ap.add_argument("--out", type=Path, default=Path(".engines"), help="parts go to OUT/NAME (default .engines)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder for the site (default OUT/.work-NAME)")
    args = ap.parse_args(argv)
    engine = parse_name(args.name)
    work = args.work or args.out / f".work-{args.name}"
    site = work / "site"
    install_site(REQUIREMENTS / f"{args.name}.txt", site)
    trims = trim(site, engine)
    print("\n".join(trims))
    manifest = pack(site, args.out / args.name, args.name, trims, work / "site.tar.xz")
    shutil.rmtree(work)
    for part in manifest["parts"]:
        print(f"{args.out / args.name / part['name']}  {part['bytes']} bytes  sha256 {part['sha256']}")
    print(f"{args.name}: {manifest['compressed_bytes'] / 2**20:.1f} MiB in {len(manifest['parts'])} part(s), "
          f"{manifest['unpacked_bytes'] / 2**20:.0f} MiB unpacked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
