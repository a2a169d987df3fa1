"""``attn-sched doctor``: what the plugin would do on this machine, and why."""

from __future__ import annotations

import importlib.metadata as md
import os

from . import __version__, plugins, switches
from .providers import BUILDS, provider_for

ENGINE_GROUPS = {"sglang": ("sglang.srt.plugins", "SGLANG_PLUGINS"), "vllm": ("vllm.general_plugins", "VLLM_PLUGINS")}


def _entry_points(engine: str) -> dict:
    group, allow_var = ENGINE_GROUPS[engine]
    ours = [ep for ep in md.entry_points(group=group) if ep.value.startswith("attn_sched_plugin.")]
    allow = os.environ.get(allow_var)
    # both engines treat the variable as an allow-list of entry-point names; unset/empty = all
    names = [n for n in (allow or "").split(",") if n]
    loaded = bool(ours) and (not names or any(ep.name in names for ep in ours))
    return {"group": group, "declared": [f"{ep.name} = {ep.value}" for ep in ours], "allow_list_var": allow_var,
            "allow_list": allow, "will_load": loaded}


def _builds() -> dict:
    found = {}
    for build in BUILDS:
        ok, why = provider_for(build).available()
        entry = {"usable": ok, "reason": why}
        if ok:
            entry["schema"] = str(provider_for(build).schema)
        found[build] = entry
    return found


def _gpu() -> dict:
    try:
        import torch

        if not torch.cuda.is_available():
            return {"available": False, "reason": "torch.cuda.is_available() is False", "torch": torch.__version__}
        props = torch.cuda.get_device_properties(0)
        return {"available": True, "name": props.name, "capability": f"{props.major}.{props.minor}",
                "hopper": props.major == 9, "count": torch.cuda.device_count(), "torch": torch.__version__}
    except Exception as exc:  # the doctor reports, it does not fail
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}


def diagnose() -> dict:
    sw = switches.current()
    pm = plugins.load_adapters()
    engines = [s.as_dict() for group in pm.hook.attn_sched_discover() for s in group]
    report = {
        "attn_sched_plugin": __version__,
        "switches": sw.as_dict(),
        "switch_errors": sw.errors,
        "engines": engines,
        "entry_points": {e: _entry_points(e) for e in ENGINE_GROUPS},
        "adapters": sorted(name for name, _ in pm.list_name_plugin() if name != "attn_sched.stats"),
        "fa3_builds": _builds(),
        "gpu": _gpu(),
    }
    report["active"], report["verdict"] = _verdict(report)
    return report


def _verdict(r: dict) -> tuple[bool, str]:
    if r["switches"]["ATTN_SCHED_DISABLE"]:
        return False, "disabled by ATTN_SCHED_DISABLE"
    loaded = [e for e in r["engines"] if e["supported"] and r["entry_points"].get(e["engine"], {}).get("will_load")]
    serving = [e for e in loaded if r["fa3_builds"].get(e["fa3_build"], {}).get("usable")]
    if not serving:
        if loaded:  # the adapter would decline: its FA3 build (or the op) is not usable here
            return False, "; ".join(f"{e['engine']} {e['installed_version']}: FA3 build {e['fa3_build']!r} unusable here"
                                    for e in loaded)
        return False, "no supported engine installed whose plugin entry point the engine will load"
    return True, "active for " + ", ".join(f"{e['engine']} {e['installed_version']}" for e in serving)


def render(r: dict) -> str:
    lines = [f"attn-sched-plugin {r['attn_sched_plugin']}: {'ACTIVE' if r['active'] else 'INACTIVE'} ({r['verdict']})", ""]
    lines.append("engines:")
    for e in r["engines"] or [{"engine": "-", "installed_version": None, "supported": False, "reason": "no adapters"}]:
        status = "supported" if e["supported"] else "not supported"
        lines.append(f"  {e['engine']:<8} {e['installed_version'] or 'not installed':<16} {status}  {e['reason']}")
    lines.append("entry points (as the engines will see them):")
    for engine, ep in r["entry_points"].items():
        lines.append(f"  {engine:<8} {ep['group']:<22} {'; '.join(ep['declared']) or 'none declared'}  "
                     f"{ep['allow_list_var']}={ep['allow_list']!r} -> {'loads' if ep['will_load'] else 'NOT loaded'}")
    lines.append("FA3 builds (get_scheduler_metadata):")
    for build, b in r["fa3_builds"].items():
        lines.append(f"  {build:<16} {'usable' if b['usable'] else 'unusable: ' + b['reason']}")
    g = r["gpu"]
    lines.append("GPU: " + (f"{g['name']} (sm {g['capability']}{', Hopper' if g['hopper'] else ', not Hopper'}) x{g['count']}"
                           if g["available"] else f"none ({g['reason']})"))
    lines.append("switches: " + ", ".join(f"{k}={v}" for k, v in r["switches"].items()))
    lines.extend(f"switch error: {e}" for e in r["switch_errors"])
    return "\n".join(lines)
