"""``attn-sched doctor``: what the plugin would do on this machine, why, and what would make it active."""

from __future__ import annotations

import importlib.metadata as md
import os

from . import __version__, activation, context, switches
from .providers import BUILDS, Build

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
    for name, build in BUILDS.items():
        ok, why = build.provider.available()
        entry = {"usable": ok, "reason": why}
        if ok:
            entry["schema"] = str(build.provider.schema)
        found[name] = entry
    return found


def _gpu() -> dict:
    try:
        import torch

        if not torch.cuda.is_available():
            return {"available": False, "reason": "torch.cuda.is_available() is False", "torch": torch.__version__}
        props = torch.cuda.get_device_properties(0)
        return {"available": True, "name": props.name, "capability": f"{props.major}.{props.minor}",
                "hopper": props.major == 9, "count": torch.cuda.device_count(), "torch": torch.__version__,
                "capture_ids_readable": context.capture_ids_readable()}
    except Exception as exc:  # the doctor reports, it does not fail
        return {"available": False, "reason": f"{type(exc).__name__}: {exc}"}


def diagnose() -> dict:
    sw = switches.current()
    pm = activation.PROCESS.hooks.load_adapters()
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
    report["active"], report["verdict"], report["to_activate"] = _verdict(report)
    return report


def _engine_requirements() -> dict[str, str]:
    """The engine versions the plugin's extras accept: pyproject.toml is the one place that says them."""
    try:
        requires = md.requires("attn-sched-plugin") or []
    except md.PackageNotFoundError:  # imported from a source tree that was never installed
        return {}
    extras = {f'extra == "{engine}"': engine for engine in ENGINE_GROUPS}
    found = {}
    for requirement in requires:
        spec, _, marker = requirement.partition(";")
        if marker.strip() in extras:
            found[extras[marker.strip()]] = spec.strip()
    return found


def _verdict(r: dict) -> tuple[bool, str, str | None]:
    """Active or not, why, and what to do to become active (None when active)."""
    if r["switches"]["ATTN_SCHED_DISABLE"]:
        return False, "disabled by ATTN_SCHED_DISABLE", "unset ATTN_SCHED_DISABLE (or set it to 0)"
    if not r["adapters"]:
        return False, "no engine adapter is registered", "reinstall attn-sched-plugin"
    requirements = _engine_requirements()
    installed = [e for e in r["engines"] if e["installed_version"]]
    supported = [e for e in installed if e["supported"]]
    loaded = [e for e in supported if r["entry_points"].get(e["engine"], {}).get("will_load")]
    serving = [e for e in loaded if r["fa3_builds"].get(e["fa3_build"], {}).get("usable")]
    if serving and r["gpu"].get("capture_ids_readable") is False:  # every routed call would pass through
        return (False, f"CUDA-graph capture ids are not readable (cuStreamGetCaptureInfo from {context.DRIVER})",
                f"run where the CUDA driver's {context.DRIVER} loads")
    if serving:
        return True, "active for " + ", ".join(f"{e['engine']} {e['installed_version']}" for e in serving), None
    if loaded:  # the adapter would decline: its FA3 build (or the op) is not usable here
        return (False, "; ".join(f"{e['engine']} {e['installed_version']}: its FA3 build {e['fa3_build']} is not "
                                 "usable here" for e in loaded),
                "; ".join(f"run on a Hopper GPU machine where {e['fa3_build']} is usable (it comes with "
                          f"{_source(e['fa3_build'])})" for e in loaded))
    if supported:  # the engine will not load our entry point
        return (False, "; ".join(f"{e['engine']} {e['installed_version']} will not load the plugin's entry point"
                                 for e in supported),
                "; ".join(_entry_point_advice(e["engine"], r["entry_points"].get(e["engine"])) for e in supported))
    if installed:
        return (False, "; ".join(f"{e['engine']} {e['installed_version']} is not supported" for e in installed),
                " or ".join(f"pip install '{requirements.get(e['engine'], e['engine'])}'" for e in installed))
    return (False, "no supported engine is installed", "install a supported engine next to it: "
            + " or ".join(f"pip install '{requirements.get(e, e)}'" for e in ENGINE_GROUPS))


def _source(build: str) -> str:
    return BUILDS[build].source if build in BUILDS else Build._field_defaults["source"]


def _entry_point_advice(engine: str, ep: dict | None) -> str:
    if ep is None:  # an engine of a third-party adapter: no entry-point group known here
        return f"have {engine} call attn_sched_plugin.activation.instrument({engine!r}) at start-up"
    if not ep["declared"]:
        return f"reinstall attn-sched-plugin (its {ep['group']} entry point is missing)"
    name = ep["declared"][0].split(" = ")[0]
    return f"add {name} to {ep['allow_list_var']} (or unset it)"


def _allow_list(ep: dict) -> str:
    if ep["allow_list"] is None:
        return f"{ep['allow_list_var']} unset"
    return f"{ep['allow_list_var']}={ep['allow_list']}" if ep["allow_list"] else f"{ep['allow_list_var']} empty"


def _engine(e: dict) -> str:
    if e["installed_version"] is None:
        return "not installed"
    state = f"{e['installed_version']} {'supported' if e['supported'] else 'not supported'}"
    return f"{state}: {e['reason']}" if e["reason"] else state


def _build(name: str, b: dict) -> str:
    """``usable``, or why not, without repeating the build's name (the reasons start with it)."""
    return "usable" if b["usable"] else b["reason"].removeprefix(f"FA3 build {name!r}").lstrip(": ")


def render(r: dict) -> str:
    lines = [f"attn-sched-plugin {r['attn_sched_plugin']}: {'ACTIVE' if r['active'] else 'INACTIVE'} ({r['verdict']})"]
    if r["to_activate"]:
        lines.append(f"to activate: {r['to_activate']}")
    lines.append("")
    lines.append("engines:")
    lines.extend(f"  {e['engine']:<8} {_engine(e)}" for e in r["engines"])
    lines.append("entry points (as the engines will see them):")
    for engine, ep in r["entry_points"].items():
        lines.append(f"  {engine:<8} {ep['group']:<22} {'; '.join(ep['declared']) or 'none declared'}  "
                     f"{_allow_list(ep)} -> {'loads' if ep['will_load'] else 'NOT loaded'}")
    lines.append("FA3 builds:")
    lines.extend(f"  {build:<16} {_build(build, b)}" for build, b in r["fa3_builds"].items())
    g = r["gpu"]
    lines.append("GPU: " + (f"{g['name']} (sm {g['capability']}{', Hopper' if g['hopper'] else ', not Hopper'}) x{g['count']}"
                           f"; capture ids {'readable' if g['capture_ids_readable'] else 'NOT readable'}"
                           if g["available"] else f"none ({g['reason']})"))
    lines.append("switches: " + ", ".join(f"{k}={v}" for k, v in r["switches"].items()))
    lines.extend(f"switch error: {e}" for e in r["switch_errors"])
    return "\n".join(lines)
