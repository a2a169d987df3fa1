"""The installed distribution that carries ``seed_baseline_plugin`` for the ``seed-baseline`` variant.

SGLang discovers general plugins through ``importlib.metadata`` entry points, which only an
installed distribution has; a ``.dist-info`` with ``entry_points.txt`` beside the module, in a
directory on PYTHONPATH, is the smallest one. Only that variant's servers get the directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from . import seed_baseline_plugin as plugin

DIST = "attn-sched-seed-baseline"
VERSION = "0.0.0"
GROUP = "sglang.srt.plugins"


def write_dist(directory: Path) -> Path:
    """Write module + dist-info into ``directory`` (replacing an earlier copy); return it."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plugin.__file__, directory / f"{plugin.NAME}.py")
    info = directory / f"{plugin.NAME}-{VERSION}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: {VERSION}\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{plugin.NAME} = {plugin.NAME}:register\n", encoding="utf-8")
    return directory
