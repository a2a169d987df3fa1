"""``attn-sched doctor``: the verdict, what to do to become active, and output a person can read
(no Python ``None``, no line saying one thing twice), on hand-made reports of each situation."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from attn_sched_plugin import doctor, providers

ROOT = Path(__file__).resolve().parents[2]
CAUSE = "OSError: libcuda.so.1: cannot open shared object file"


def report(sglang: str | None = None, supported: bool = True, allow: str | None = None, usable: bool = False,
           disabled: bool = False, adapters: tuple[str, ...] = ("sglang", "vllm")) -> dict:
    """A report as ``diagnose()`` builds it: vLLM absent, SGLang as asked."""
    names = [n for n in (allow or "").split(",") if n]
    r = {
        "attn_sched_plugin": "0.1.0",
        "switches": {"ATTN_SCHED_DISABLE": disabled, "ATTN_SCHED_VERIFY": False, "ATTN_SCHED_SUMMARY_INTERVAL": 600.0,
                     "ATTN_SCHED_SGLANG_MODE": "replace"},
        "switch_errors": [],
        "engines": [
            {"engine": "vllm", "installed_version": None, "supported": False, "reason": "vllm is not installed",
             "fa3_build": "vllm_flash_attn"},
            {"engine": "sglang", "installed_version": sglang, "supported": sglang is not None and supported,
             "reason": "sglang is not installed" if sglang is None else "" if supported else "older than 0.5.11",
             "fa3_build": "sgl_kernel"},
        ],
        "entry_points": {
            "sglang": {"group": "sglang.srt.plugins",
                       "declared": ["attn_sched = attn_sched_plugin.entrypoints:sglang_plugin"],
                       "allow_list_var": "SGLANG_PLUGINS", "allow_list": allow,
                       "will_load": not names or "attn_sched" in names},
            "vllm": {"group": "vllm.general_plugins",
                     "declared": ["attn_sched = attn_sched_plugin.entrypoints:vllm_plugin"],
                     "allow_list_var": "VLLM_PLUGINS", "allow_list": None, "will_load": True},
        },
        "adapters": list(adapters),
        "fa3_builds": {b: {"usable": True, "reason": ""} if usable and b == "sgl_kernel" else
                       {"usable": False, "reason": f"FA3 build {b!r} has no usable get_scheduler_metadata ({CAUSE})"}
                       for b in providers.BUILDS},
        "gpu": {"available": False, "reason": "torch.cuda.is_available() is False"},
    }
    r["active"], r["verdict"], r["to_activate"] = doctor._verdict(r)
    return r


def third_party_engine() -> dict:
    """An engine served by another adapter, of which the doctor knows no entry-point group."""
    r = report()
    r["engines"].append({"engine": "myengine", "installed_version": "1.0", "supported": True, "reason": "",
                         "fa3_build": "fa3_fwd"})
    r["active"], r["verdict"], r["to_activate"] = doctor._verdict(r)
    return r


CASES = {
    "disabled": report(sglang="0.5.23", usable=True, disabled=True),
    "no adapters": report(adapters=()),
    "no engine": report(),
    "old engine": report(sglang="0.4.0", supported=False),
    "allow-list without us": report(sglang="0.5.23", allow="other"),
    "build unusable": report(sglang="0.5.23"),
    "active": report(sglang="0.5.23", allow="", usable=True),
    "third-party engine": third_party_engine(),
}


def extra_requirements() -> dict[str, Requirement]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {engine: Requirement(extras[engine][0]) for engine in ("sglang", "vllm")}


def test_engine_versions_come_from_the_extras():
    got = {engine: Requirement(spec) for engine, spec in doctor._engine_requirements().items()}
    assert got == extra_requirements()


@pytest.mark.parametrize("case, advice", [
    ("disabled", ["unset ATTN_SCHED_DISABLE"]),
    ("no adapters", ["reinstall attn-sched-plugin"]),
    ("no engine", ["pip install 'sglang", "pip install 'vllm"]),
    ("old engine", ["pip install 'sglang"]),
    ("allow-list without us", ["add attn_sched to SGLANG_PLUGINS (or unset it)"]),
    ("build unusable", ["Hopper GPU", "sgl_kernel is usable", "sgl-kernel, which sglang installs"]),
    ("third-party engine", ["attn_sched_plugin.activation.instrument('myengine')"]),
])
def test_an_inactive_verdict_says_what_to_do(case, advice):
    r = CASES[case]
    assert r["active"] is False
    assert all(a in r["to_activate"] for a in advice), r["to_activate"]
    assert f"to activate: {r['to_activate']}" in doctor.render(r).splitlines()


@pytest.mark.parametrize("case, engines", [("no engine", ["sglang", "vllm"]), ("old engine", ["sglang"])])
def test_install_advice_names_the_supported_versions(case, engines):
    commands = CASES[case]["to_activate"].split("pip install ")[1:]
    got = [Requirement(c.split("'")[1]) for c in commands]
    assert got == [extra_requirements()[e] for e in engines]


def test_active_has_no_advice():
    r = CASES["active"]
    assert (r["active"], r["verdict"], r["to_activate"]) == (True, "active for sglang 0.5.23", None)
    assert "to activate" not in doctor.render(r)


@pytest.mark.parametrize("allow, shown", [
    (None, "SGLANG_PLUGINS unset -> loads"),
    ("", "SGLANG_PLUGINS empty -> loads"),
    ("other", "SGLANG_PLUGINS=other -> NOT loaded"),
    ("other,attn_sched", "SGLANG_PLUGINS=other,attn_sched -> loads"),
])
def test_allow_list_is_shown_as_a_shell_user_set_it(allow, shown):
    (line,) = [ln for ln in doctor.render(report(allow=allow)).splitlines() if "sglang.srt.plugins" in ln]
    assert line.endswith(shown)


@pytest.mark.parametrize("case", CASES)
def test_no_python_none_and_no_line_says_a_thing_twice(case):
    lines = doctor.render(CASES[case]).splitlines()
    assert not [ln for ln in lines if "None" in ln]
    for phrase in ("sgl_kernel", "vllm_flash_attn", "not installed", "usable", CAUSE):
        assert not [ln for ln in lines if ln.count(phrase) > 1], phrase


def test_unusable_builds_show_their_cause():
    lines = doctor.render(CASES["build unusable"]).splitlines()
    assert f"  sgl_kernel       has no usable get_scheduler_metadata ({CAUSE})" in lines
    assert "  sglang   not installed" in doctor.render(CASES["no engine"]).splitlines()


def test_every_fa3_build_says_where_it_comes_from():
    assert all(build.source for build in providers.BUILDS.values())


def test_this_machine_renders_without_none():
    assert "None" not in doctor.render(doctor.diagnose())


@pytest.mark.parametrize("readable", [True, False])
def test_unreadable_capture_ids_make_the_verdict_inactive(readable):
    """The adapters share only inside captures: with no capture id, every routed call passes through."""
    r = report(sglang="0.5.23", allow="", usable=True)
    r["gpu"] = {"available": True, "name": "H200", "capability": "9.0", "hopper": True, "count": 1,
                "torch": "2.9", "capture_ids_readable": readable}
    r["active"], r["verdict"], r["to_activate"] = doctor._verdict(r)
    assert r["active"] is readable
    shown = doctor.render(r)
    assert ("capture ids readable" if readable else "capture ids NOT readable") in shown
    if not readable:
        assert "libcuda.so.1" in r["verdict"] and "libcuda.so.1" in r["to_activate"]
