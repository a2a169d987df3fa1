"""Running the benchmark grid: each point times the three variants and checks they agree bitwise."""

from __future__ import annotations

import platform
import sys
import time

import torch

from .. import __version__
from ..activation import PROCESS
from ..verify import bitwise_equal
from .builds import FA3Build
from .presets import MODES, Preset
from .step import VARIANTS, Step
from .timing import alternate, capture, prepare_launches

GRAPHED = ("decode", "verify")


def point(preset: Preset, build: FA3Build, batch: int, context: int, mode: str, replays: int,
          device: torch.device, after_layer=None) -> dict:
    """Time one (preset, batch, context, mode); graphs for decode/verify, eager for extend."""
    step = Step(preset, build, batch, context, MODES[mode], device, after_layer=after_layer)
    host_work = {"engine": step.engine_precompute}
    if mode in GRAPHED:
        step.engine_precompute()  # the engine's persistent buffer exists before capture
        PROCESS.graphs.install()  # captured as in an engine the plugin is active in: each with its arena
        try:
            graphs = {v: capture(lambda v=v: step.run(v)) for v in VARIANTS}
        finally:
            PROCESS.graphs.uninstall()  # the graphs keep their arenas
        runs = {v: g.replay for v, g in graphs.items()}
    else:
        runs = {v: (lambda v=v: step.run(v, captured=False)) for v in VARIANTS}
    timed = alternate(runs, host_work, replays)
    launches = {v: prepare_launches(lambda v=v: (host_work.get(v, _nothing)(), runs[v]())) for v in VARIANTS}
    exact_first = _exact(step)
    # lengths change in place between steps, as in serving: graphs replay with the new lengths
    step.set_lengths(seed=1)
    for v in VARIANTS:
        host_work.get(v, _nothing)()
        runs[v]()
    torch.cuda.synchronize()
    exact_after = _exact(step)
    return {
        "preset": preset.name, "mode": mode, "batch": batch, "context": context, "q_len": MODES[mode],
        "layers": preset.layers, "kv_caches": step.num_caches, "graph": mode in GRAPHED,
        "distinct_shapes": step.distinct_shapes(),
        "variants": {v: {**timed[v], "prepare_launches": launches[v]} for v in VARIANTS},
        "bitwise_equal_to_fa3": {v: exact_first[v] and exact_after[v] for v in ("engine", "plugin")},
    }


def _exact(step: Step) -> dict:
    return {v: bitwise_equal(step.out[v], step.out["fa3"]) for v in ("engine", "plugin")}


def _nothing() -> None:
    return None


def environment(build: FA3Build, argv: list[str]) -> dict:
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "card": props.name, "sm_count": props.multi_processor_count, "capability": f"{props.major}.{props.minor}",
        "fa3_build": build.name, "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "attn_sched_plugin": __version__,
        "command": " ".join(["attn-sched", "bench", *argv]), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "argv0": sys.argv[0],
    }


def derived(result: dict) -> dict:
    """Saved time and noise verdict of the plugin against (a) and (b) for one point."""
    v = result["variants"]
    fa3, engine, plugin = (v[n]["gpu_us"] for n in VARIANTS)
    spread = max(fa3["p90"] - fa3["p10"], plugin["p90"] - plugin["p10"])
    saved = fa3["median"] - plugin["median"]
    return {
        "saved_us": saved,
        "saved_pct": 100.0 * saved / fa3["median"],
        "saved_vs_engine_us": engine["median"] - plugin["median"],
        "noise": abs(saved) < spread,
        "host_saved_us": v["fa3"]["host_us"]["median"] - v["plugin"]["host_us"]["median"],
    }
