"""Pack a site folder into parts that each fit one call to the GPU machine.

Why: a call carries at most 64 MiB, the working tree included (~11 MiB with the committed results, and
growing), so the compressed site is cut into parts of at most PART_LIMIT bytes. ``tar | xz -9e`` because
engine libraries compress up to 20x; tar is made reproducible (sorted names, fixed owner and times).
Next to the parts go SHA256SUMS (what install.sh checks) and manifest.json (sizes, versions, checksums,
trims).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

CALL_LIMIT = 64 * 2**20  # what one call to the GPU machine carries, working tree included
PART_LIMIT = 41 * 2**20  # leaves 23 MiB for the working tree beside one part (a test checks the tree fits)


def split(archive: Path, out: Path, limit: int = PART_LIMIT) -> list[Path]:
    """Cut ``archive`` into ``out/part-aa``, ``part-ab``, ... of at most ``limit`` bytes each."""
    if not 0 < limit <= CALL_LIMIT - 2 * 2**20:
        raise ValueError(f"part limit {limit} bytes: a call carries {CALL_LIMIT} bytes with the ~5 MiB "
                         f"repository; accepted: 1..{CALL_LIMIT - 2 * 2**20}")
    for old in out.glob("part-*"):
        old.unlink()
    parts = []
    with archive.open("rb") as src:
        while chunk := src.read(limit):
            n = len(parts)
            if n >= 26 * 26:
                raise ValueError(f"{archive} needs more than {26 * 26} parts of {limit} bytes")
            part = out / f"part-{chr(97 + n // 26)}{chr(97 + n % 26)}"
            part.write_bytes(chunk)
            parts.append(part)
    return parts


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(2**22):
            h.update(block)
    return h.hexdigest()


def compress(site: Path, archive: Path) -> None:
    """``tar | xz -9e``, reproducible: same site in, same bytes out."""
    tar = subprocess.Popen(["tar", "-C", str(site), "--sort=name", "--owner=0", "--group=0", "--numeric-owner",
                            "--mtime=2020-01-01 00:00Z", "-cf", "-", "."], stdout=subprocess.PIPE)
    with archive.open("wb") as dst:
        subprocess.run(["xz", "-9e", "-T2", "-c"], stdin=tar.stdout, stdout=dst, check=True)
    tar.stdout.close()
    if tar.wait() != 0:
        raise SystemExit(f"pack: tar of {site} failed (exit {tar.returncode})")


def distributions(site: Path) -> dict[str, str]:
    """name -> version of every distribution installed in ``site`` (from its .dist-info folders)."""
    found = {}
    for info in sorted(site.glob("*.dist-info")):
        meta = (info / "METADATA").read_text(errors="replace").splitlines()
        fields = dict(line.split(": ", 1) for line in meta[:10] if ": " in line)
        found[fields["Name"]] = fields["Version"]
    return found


def pack(site: Path, out: Path, name: str, trims: list[str], archive: Path, limit: int = PART_LIMIT) -> dict:
    """Write the parts, SHA256SUMS and manifest.json of ``site`` into ``out``; return the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    compress(site, archive)
    parts = split(archive, out, limit)
    sums = {p.name: sha256(p) for p in parts}
    (out / "SHA256SUMS").write_text("".join(f"{digest}  {part}\n" for part, digest in sums.items()))
    files = [p for p in site.rglob("*") if p.is_file() and not p.is_symlink()]
    manifest = {
        "name": name,
        "parts": [{"name": p.name, "bytes": p.stat().st_size, "sha256": sums[p.name]} for p in parts],
        "compressed_bytes": archive.stat().st_size,
        "unpacked_bytes": sum(p.stat().st_size for p in files),
        "unpacked_files": len(files),
        "distributions": distributions(site),
        "trims": trims,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    archive.unlink()
    return manifest
