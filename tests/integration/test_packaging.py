"""Tried as a new user would: build the wheel and sdist from the checkout with ``python -m build``,
run the README's install line in the unpacked sdist (a checkout's files) into a fresh plain venv,
list the entry points there and run ``attn-sched doctor --json``.

The install line runs with ``--no-deps`` added (the engine its extra names is GBs), and the venv
then borrows exactly the wheel's declared runtime dependencies (``Requires-Dist`` without extras,
recursively: pluggy, torch and theirs) from the environment running the test, by linking those
distributions into a directory on a ``.pth`` line. Nothing else of this environment is visible
there (unlike ``--system-site-packages``), so an undeclared import or a missing entry point fails
here, while no multi-GB torch download is needed. Bounded to ~4 minutes by the subprocess timeouts.
"""

from __future__ import annotations

import email
import importlib.metadata as md
import json
import re
import shlex
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("build", reason="the packaging check needs `build` (pip install build) to run python -m build")
from packaging.requirements import Requirement  # a dependency of build

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_ENTRY_POINTS = {
    "sglang.srt.plugins": ["attn_sched = attn_sched_plugin.entrypoints:sglang_plugin"],
    "vllm.general_plugins": ["attn_sched = attn_sched_plugin.entrypoints:vllm_plugin"],
    "attn_sched_plugin.adapters": ["sglang = attn_sched_plugin.adapters.sglang",
                                   "vllm = attn_sched_plugin.adapters.vllm"],
    "console_scripts": ["attn-sched = attn_sched_plugin.cli:main"],
}


def _run(argv: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    # sdist first, then the wheel built from the unpacked sdist: a file missing from the sdist fails here
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], timeout=110)
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def readme_install_args() -> list[str]:
    """The arguments of the README's working install line (the ``pip install`` in its first bash block)."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Install and use", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    (line,) = [ln for ln in block.splitlines() if ln.startswith("pip install ")]
    return shlex.split(line, comments=True)[2:]


def _wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(zf.read(name))


def _runtime_closure(requirements: list[str]) -> list[md.Distribution]:
    """The installed distributions that the given requirements need, transitively, without extras."""
    seen: dict[str, md.Distribution] = {}
    todo = list(requirements)
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = req.name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            pytest.skip(f"{req.name} (a runtime dependency of the wheel) is not installed in the test "
                        "environment, which the fresh venv borrows it from")
        seen[key] = dist
        todo.extend(dist.requires or [])
    return list(seen.values())


def _link(dist: md.Distribution, into: Path) -> None:
    """Link a distribution's top-level modules and its .dist-info into ``into``."""
    assert dist.files is not None, f"{dist.metadata['Name']} has no RECORD; cannot tell its files"
    tops = {f.parts[0] for f in dist.files if f.parts[0] not in ("..", "__pycache__")}
    for top in sorted(tops):
        target = Path(dist.locate_file(top))
        link = into / top
        if link.is_symlink():  # namespace packages (nvidia/...) shared by several distributions
            assert link.resolve() == target.resolve(), f"{top} comes from two places"
            continue
        link.symlink_to(target)


@pytest.fixture(scope="module")
def venv(dists, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("venv")
    env_dir = base / "venv"
    _run([sys.executable, "-m", "venv", str(env_dir)], timeout=60)
    python = env_dir / "bin" / "python"
    with tarfile.open(dists["sdist"]) as tf:
        tf.extractall(base / "sdist", filter="data")
    (checkout,) = (base / "sdist").iterdir()
    _run([str(python), "-m", "pip", "install", "--no-deps", "--quiet", *readme_install_args()], timeout=120,
         cwd=checkout)
    borrowed = base / "borrowed"
    borrowed.mkdir()
    for dist in _runtime_closure(_wheel_metadata(dists["wheel"]).get_all("Requires-Dist") or []):
        _link(dist, borrowed)
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], timeout=30)
    (Path(purelib.stdout.strip()) / "_borrowed_runtime_deps.pth").write_text(f"{borrowed}\n")
    return env_dir


def _clean_env(env_dir: Path, home: Path) -> dict[str, str]:
    """What a new user's shell has: no PYTHONPATH, no plugin switches, no engine allow-lists."""
    return {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


def test_wheel_and_sdist_contents(dists):
    meta = _wheel_metadata(dists["wheel"])
    assert meta["Name"] == "attn-sched-plugin"
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Version"] == dists["wheel"].name.split("-")[1]
    with zipfile.ZipFile(dists["wheel"]) as zf:
        names = zf.namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert all(n.startswith(("attn_sched_plugin/", "attn_sched_plugin-")) for n in names), "stray top-level files"
    with tarfile.open(dists["sdist"]) as tf:
        members = {Path(m).relative_to(Path(m).parts[0]).as_posix() for m in tf.getnames() if len(Path(m).parts) > 1}
    assert {"LICENSE", "README.md", "pyproject.toml", "attn_sched_plugin/__init__.py"} <= members


def test_readme_install_line_names_this_package_and_its_extras(dists):
    (target,) = readme_install_args()
    source, extras = re.fullmatch(r"(.+)\[(.+)\]", target).groups()
    assert source == "."  # the checkout: the package is not on an index yet
    provided = _wheel_metadata(dists["wheel"]).get_all("Provides-Extra")
    assert set(extras.split(",")) <= set(provided), (extras, provided)


def test_entry_points_visible_in_fresh_venv(venv, tmp_path):
    script = (
        "import importlib.metadata as md, json, attn_sched_plugin\n"
        f"groups = {sorted(EXPECTED_ENTRY_POINTS)!r}\n"
        "print(json.dumps({'file': attn_sched_plugin.__file__, 'eps': {g: sorted(f'{e.name} = {e.value}' "
        "for e in md.entry_points(group=g)) for g in groups}}))\n"
    )
    done = _run([str(venv / "bin" / "python"), "-c", script], timeout=60, cwd=tmp_path, env=_clean_env(venv, tmp_path))
    got = json.loads(done.stdout)
    assert Path(got["file"]).is_relative_to(venv), f"imported from {got['file']}, not the venv"
    scripts = got["eps"].pop("console_scripts")  # pip's and the borrowed packages' scripts are there too
    assert EXPECTED_ENTRY_POINTS["console_scripts"][0] in scripts
    assert got["eps"] == {g: v for g, v in EXPECTED_ENTRY_POINTS.items() if g != "console_scripts"}


def test_doctor_json_in_fresh_venv(venv, dists, tmp_path):
    """No engine is installed there: the doctor must say so in JSON and exit 1 (inactive)."""
    done = subprocess.run([str(venv / "bin" / "attn-sched"), "doctor", "--json"], capture_output=True, text=True,
                          timeout=90, cwd=tmp_path, env=_clean_env(venv, tmp_path))
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"doctor --json printed no JSON (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    assert report["attn_sched_plugin"] == _wheel_metadata(dists["wheel"])["Version"]
    assert report["active"] is False and done.returncode == 1, (report["verdict"], done.returncode)
    assert sorted(report["adapters"]) == ["sglang", "vllm"], done.stderr
    assert {e["engine"]: e["installed_version"] for e in report["engines"]} == {"sglang": None, "vllm": None}
    for engine, group in (("sglang", "sglang.srt.plugins"), ("vllm", "vllm.general_plugins")):
        assert report["entry_points"][engine]["declared"] == EXPECTED_ENTRY_POINTS[group]
    assert report["switches"]["ATTN_SCHED_DISABLE"] is False
    # what to install comes from the installed wheel's own extras
    extras = [r.split(";")[0].strip() for r in _wheel_metadata(dists["wheel"]).get_all("Requires-Dist")
              if r.split(";")[-1].strip() in ('extra == "sglang"', 'extra == "vllm"')]
    assert len(extras) == 2 and all(f"pip install '{e}'" in report["to_activate"] for e in extras), report["to_activate"]
