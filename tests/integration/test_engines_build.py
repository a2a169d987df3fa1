"""The part builder's own logic, on CPU with no network: part sizes, build names, pins, trim rules,
and the sm90 fatbin trim on a synthetic CUDA library (gcc puts the bytes in a real .nv_fatbin)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.integration.engines_modules import ENGINES, load

pack = load("pack")
build_parts = load("build_parts")
fatbin = load("fatbin")
trim = load("trim")


def test_split_cuts_into_parts_no_larger_than_the_limit_and_rejoins_exactly(tmp_path):
    data = bytes(range(256)) * 40  # 10240 bytes
    archive = tmp_path / "a.tar.xz"
    archive.write_bytes(data)
    (tmp_path / "out").mkdir()
    parts = pack.split(archive, tmp_path / "out", limit=4096)
    assert [p.name for p in parts] == ["part-aa", "part-ab", "part-ac"]
    assert [p.stat().st_size for p in parts] == [4096, 4096, 2048]
    assert b"".join(p.read_bytes() for p in parts) == data


def test_split_replaces_the_parts_of_an_earlier_build(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-ac").write_bytes(b"stale")
    archive = tmp_path / "a"
    archive.write_bytes(b"x" * 10)
    assert [p.name for p in pack.split(archive, out, limit=8)] == ["part-aa", "part-ab"]
    assert sorted(p.name for p in out.iterdir()) == ["part-aa", "part-ab"]


@pytest.mark.parametrize("limit", [0, pack.CALL_LIMIT - 2 * 2**20 + 1, pack.CALL_LIMIT])
def test_split_refuses_a_part_that_cannot_travel_beside_the_repository(tmp_path, limit):
    archive = tmp_path / "a"
    archive.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"part limit .* accepted: 1\.\.") as err:
        pack.split(archive, tmp_path, limit=limit)
    assert "\n" not in str(err.value)


def test_one_part_fits_a_call_beside_the_tracked_tree_with_room_to_grow():
    """The committed results grow the tree every GPU session; at 56 MiB parts an 11 MiB tree no longer fit."""
    root = Path(__file__).parents[2]
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True, capture_output=True).stdout
    tree = sum((root / name).stat().st_size for name in tracked.decode().split("\0") if (root / name).is_file())
    assert pack.PART_LIMIT + tree + 4 * 2**20 <= pack.CALL_LIMIT, f"tree {tree / 2**20:.1f} MiB"


def test_pack_writes_parts_checksums_and_manifest(tmp_path):
    site = tmp_path / "site"
    (site / "demo-1.0.dist-info").mkdir(parents=True)
    (site / "demo-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
    (site / "demo.py").write_bytes(bytes(range(256)) * 64)
    out = tmp_path / "out"
    manifest = pack.pack(site, out, "vllm-9.9.9", ["removed x"], tmp_path / "s.tar.xz", limit=512)
    assert manifest["name"] == "vllm-9.9.9" and manifest["distributions"] == {"demo": "1.0"}
    assert manifest["unpacked_files"] == 2 and manifest["trims"] == ["removed x"]
    assert len(manifest["parts"]) >= 2 and all(p["bytes"] <= 512 for p in manifest["parts"])
    sums = (out / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{p['sha256']}  {p['name']}" for p in manifest["parts"]]
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=out).returncode == 0
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    joined = b"".join((out / p["name"]).read_bytes() for p in manifest["parts"])
    subprocess.run(["tar", "-xJ", "-C", str(unpacked)], input=joined, check=True)
    assert (unpacked / "demo.py").read_bytes() == (site / "demo.py").read_bytes()
    assert not (tmp_path / "s.tar.xz").exists()


def test_compress_is_reproducible(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "f").write_text("same")
    pack.compress(site, tmp_path / "a")
    (site / "f").touch()  # a new mtime must not change the archive
    pack.compress(site, tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_unknown_build_name_is_one_line_listing_the_accepted_ones():
    with pytest.raises(SystemExit) as err:
        build_parts.parse_name("vllm-0.99.0")
    msg = str(err.value)
    assert "\n" not in msg and "'vllm-0.99.0'" in msg and "vllm-0.26.0" in msg and "sglang-0.5.16" in msg


def test_each_build_has_trim_rules_and_exact_pins():
    names = build_parts.known_builds()
    assert {"vllm-0.26.0", "sglang-0.5.16"} <= set(names)
    for name in names:
        engine = build_parts.parse_name(name)
        lines = [ln for ln in (ENGINES / "requirements" / f"{name}.txt").read_text().splitlines()
                 if ln and not ln.startswith("#")]
        assert lines[0] == f"{engine}=={name.split('-', 1)[1]}", f"{name}: the engine itself comes first, pinned"
        assert all("==" in ln and not set(ln) & set("<>~*;") for ln in lines), f"{name}: every line an exact pin"


def test_trim_removes_what_the_rules_name_and_reports_each_rule(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "sgl_kernel" / "sm100").mkdir(parents=True)
    (site / "sgl_kernel" / "sm100" / "common_ops.abi3.so").write_bytes(b"x")
    (site / "sgl_kernel" / "infllm_ops.cpython-310-x86_64-linux-gnu.so").write_bytes(b"x")
    (site / "sgl_kernel" / "flash_ops.abi3.so").write_bytes(b"FA3")
    rules = trim.Trim(remove={k: trim.TRIMS["sglang"].remove[k] for k in ("sgl_kernel/sm100", "sgl_kernel/infllm_ops*.so", "tools")})
    monkeypatch.setitem(trim.TRIMS, "sglang", rules)
    done = trim.trim(site, "sglang")
    assert sorted(p.name for p in (site / "sgl_kernel").iterdir()) == ["flash_ops.abi3.so"]
    assert [d.split(" (")[0] for d in done] == ["removed sgl_kernel/sm100", "removed sgl_kernel/infllm_ops*.so", "removed tools"]
    assert "(0 path(s))" in done[2]


def test_fa3_libraries_are_never_trimmed():
    for rules in trim.TRIMS.values():
        touched = list(rules.remove) + list(rules.fatbin_sm90) + list(rules.strip_debug)
        assert not [t for t in touched if "fa3" in t or "flash_ops" in t]


# --- the sm90 fatbin trim -------------------------------------------------------------------------

def _entry(kind: int, arch: int, payload: bytes) -> bytes:
    header = bytearray(64)
    struct.pack_into("<HHIQ", header, 0, kind, 0x101, 64, len(payload))
    struct.pack_into("<I", header, 28, arch)
    return bytes(header) + payload


def _fatbin(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", fatbin.MAGIC, 1, 16, len(body)) + body


CUBIN, PTX = fatbin.KIND_CUBIN, fatbin.KIND_PTX
FATBINS = [
    # has an sm90 cubin: only that stays (sm80 cubin and every PTX go)
    _fatbin(_entry(CUBIN, 80, b"a" * 40), _entry(CUBIN, 90, b"b" * 24), _entry(PTX, 90, b"c" * 16)),
    # no sm90 cubin: the PTX an sm90 driver could JIT (compute <= 90) stays
    _fatbin(_entry(CUBIN, 100, b"d" * 32), _entry(PTX, 80, b"e" * 8), _entry(PTX, 100, b"f" * 8)),
    # nothing an sm90 GPU can load: left as it is
    _fatbin(_entry(CUBIN, 100, b"g" * 16)),
]


@pytest.fixture
def cuda_lib(tmp_path):
    if not shutil.which("gcc") or not shutil.which("readelf"):
        pytest.skip("needs gcc and readelf to build a library with a .nv_fatbin section")
    blob = b"".join(FATBINS[:1]) + bytes(8) + b"".join(FATBINS[1:])  # zero padding between fatbins is allowed
    src = tmp_path / "lib.c"
    src.write_text('__attribute__((used, section(".nv_fatbin"), aligned(8))) const unsigned char fatbin[] = {'
                   + ",".join(map(str, blob)) + "};\n")
    lib = tmp_path / "lib.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


def _entries(lib):
    off, size = fatbin._section(lib)
    return [[(arch, kind, bytes(buf[e + 64:e + n])) for e, n, arch, kind in entries]
            for buf in [lib.read_bytes()] for _, _, _, entries in fatbin._parse(buf, off, size)]


def test_keep_arch_keeps_exactly_what_an_sm90_gpu_loads(cuda_lib):
    size = cuda_lib.stat().st_size
    section = fatbin._section(cuda_lib)
    sizes = fatbin.keep_arch(cuda_lib, 90)
    assert _entries(cuda_lib) == [
        [(90, CUBIN, b"b" * 24)],
        [(80, PTX, b"e" * 8)],
        [(100, CUBIN, b"g" * 16)],
    ]
    assert cuda_lib.stat().st_size == size and fatbin._section(cuda_lib) == section
    assert sizes["bytes_before"] - sizes["bytes_after"] == (64 + 40) + (64 + 16) + (64 + 32) + (64 + 8)


def test_keep_arch_refuses_bytes_it_does_not_understand(cuda_lib):
    off, _ = fatbin._section(cuda_lib)
    data = bytearray(cuda_lib.read_bytes())
    data[off:off + 4] = b"\x01\x02\x03\x04"
    cuda_lib.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="unexpected bytes"):
        fatbin.keep_arch(cuda_lib, 90)


def test_sglang_builds_pin_the_deep_gemm_their_engine_requires():
    """SGLang's speculative worker imports ``dsa_backend`` -> ``deep_gemm`` while capturing its CUDA graphs
    (0.5.16 ``eagle_worker_v2._capture_cuda_graphs``), whatever the attention backend: without it every
    EAGLE3 server died before it was healthy. The pins are those of the engines' own Requires-Dist."""
    required = {"sglang-0.5.16": "sgl-deep-gemm==0.1.4.post1", "sglang-0.5.17": "sgl-deep-gemm==0.1.5.post1"}
    for name, pin in required.items():
        lines = (ENGINES / "requirements" / f"{name}.txt").read_text().splitlines()
        assert pin in lines, f"{name}: {pin} missing"
