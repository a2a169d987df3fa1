"""Drop, in place, the CUDA device code an sm90 GPU can never load from a shared library.

Why: the engines' wheels carry cubins for every GPU generation; the GPU machine is Hopper only,
and each transfer is capped at 64 MiB, so code for other GPUs is dead weight.

The library's ``.nv_fatbin`` section holds one fatbin per CUDA translation unit: a 16-byte header
(magic, version, header size, payload size) followed by entries, each an entry header (kind @0,
header size @4, payload size @8, sm arch @28) plus its payload (a cubin or PTX). Per fatbin:

- if it has a cubin for the kept arch, only those cubins stay (the driver never JIT-compiles PTX
  when a matching cubin exists);
- else its PTX of compute capability <= the kept arch stays (what the driver would JIT-compile);
- else (e.g. sm100-only kernels) it stays as it is.

Kept entries move, byte-identical, to the front of their fatbin, the payload size is rewritten
and the freed tail is zero-filled: file size, section layout and every fatbin's start address
are unchanged, so the host code's pointers into the section stay valid. The result is re-parsed
and the kept bytes are compared with what was selected before anything is reported.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

MAGIC = 0xBA55ED50
KIND_PTX, KIND_CUBIN = 1, 2

Entry = tuple[int, int, int, int]  # (offset, length incl. header, arch, kind)


def _section(path: Path, name: str = ".nv_fatbin") -> tuple[int, int]:
    out = subprocess.run(["readelf", "-S", "-W", str(path)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if f" {name} " in line:
            fields = line.split("]", 1)[1].split()
            return int(fields[3], 16), int(fields[4], 16)
    raise SystemExit(f"fatbin: no {name} section in {path}; expected a CUDA shared library")


def _parse(buf, off: int, size: int) -> Iterator[tuple[int, int, int, list[Entry]]]:
    """Yield (fatbin start, header size, payload size, entries) for every fatbin in the section."""
    pos, end = off, off + size
    while pos + 16 <= end:
        magic, _version, hsize, fsize = struct.unpack_from("<IHHQ", buf, pos)
        if magic != MAGIC:
            if any(buf[pos:pos + 8]):  # only zero padding may sit between fatbins
                raise SystemExit(f"fatbin: unexpected bytes at {pos:#x}; refusing to edit")
            pos += 8
            continue
        entries, epos, eend = [], pos + hsize, pos + hsize + fsize
        while epos < eend:
            kind, _unused, ehsize, psize = struct.unpack_from("<HHIQ", buf, epos)
            arch = struct.unpack_from("<I", buf, epos + 28)[0]
            entries.append((epos, ehsize + psize, arch, kind))
            epos += ehsize + psize
        if epos != eend:
            raise SystemExit(f"fatbin at {pos:#x}: entries overrun its payload; refusing to edit")
        yield pos, hsize, fsize, entries
        pos = eend


def _wanted(entries: list[Entry], arch: int) -> list[Entry]:
    cubins = [e for e in entries if e[3] == KIND_CUBIN and e[2] == arch]
    if cubins:
        return cubins
    ptx = [e for e in entries if e[3] == KIND_PTX and e[2] <= arch]
    return ptx or entries


def keep_arch(path: Path, arch: int = 90) -> dict[str, int]:
    """Trim ``path`` in place to what an sm``arch`` GPU can load; return bytes before/after by kind."""
    off, size = _section(path)
    before, after = Counter(), Counter()
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as buf:
        selected = hashlib.sha256()
        for start, hsize, fsize, entries in list(_parse(buf, off, size)):
            for _, length, a, kind in entries:
                before[kind] += length
            kept = b"".join(bytes(buf[e:e + n]) for e, n, _, _ in _wanted(entries, arch))
            selected.update(kept)
            body = start + hsize
            buf[body:body + len(kept)] = kept
            buf[body + len(kept):body + fsize] = bytes(fsize - len(kept))
            struct.pack_into("<Q", buf, start + 8, len(kept))
        buf.flush()
        reread = hashlib.sha256()
        for _, _, _, entries in _parse(buf, off, size):
            for e, length, _, kind in entries:
                after[kind] += length
                reread.update(bytes(buf[e:e + length]))
    if reread.digest() != selected.digest():
        raise SystemExit(f"fatbin: {path} does not re-read as the selected entries; the file is damaged, rebuild")
    return {"bytes_before": sum(before.values()), "bytes_after": sum(after.values())}
