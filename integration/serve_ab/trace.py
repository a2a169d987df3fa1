"""``prepare_varlen_num_blocks`` launches per decode step, counted in a chrome trace (.json / .json.gz).

Method: in a window of pure decode, every attention layer makes exactly one FA3 forward call per
step, and each call runs one main kernel (``FlashAttnFwdSm90``; a split-KV combine is a separate
``FlashAttnFwdCombine``). So ``steps = FA3 main kernels / attention layers`` and
``prepare per step = prepare kernels / steps``. Both counts come from the same window, so steps the
profiler cut at its edges cancel out. Kernels replayed from CUDA graphs appear in the trace as
kernel events like eager ones. Traces are not needed after this: the counts are what is kept.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

PREPARE = "prepare_varlen_num_blocks"
FA3_MAIN = "FlashAttnFwdSm90"


def kernel_names(path: Path):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    events = data.get("traceEvents", []) if isinstance(data, dict) else data
    for ev in events:
        if isinstance(ev, dict) and str(ev.get("cat", "")).lower() == "kernel":
            yield str(ev.get("name", ""))


def count(path: Path) -> dict:
    """Prepare and FA3-main kernel events of one trace (one process / rank)."""
    prepare = fa3 = 0
    for name in kernel_names(path):
        prepare += PREPARE in name
        fa3 += FA3_MAIN in name
    return {"file": path.name, "prepare": prepare, "fa3_main": fa3}


def per_step(counts: dict, layers: int) -> dict:
    """Decode steps in the window and prepare launches per step (None without FA3 kernels)."""
    if counts["fa3_main"] == 0:
        return {"steps": 0.0, "prepare_per_step": None}
    steps = counts["fa3_main"] / layers
    return {"steps": steps, "prepare_per_step": counts["prepare"] / steps}
