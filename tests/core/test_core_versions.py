"""Version gating: one requirement per adapter, evaluated with ``packaging``; pyproject's extras repeat it."""

from __future__ import annotations

import pathlib
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from attn_sched_plugin.adapters import packages, sglang, sglang_targets, vllm, vllm_targets

ROOT = pathlib.Path(__file__).resolve().parents[2]
ADAPTERS = {"sglang": sglang_targets.REQUIREMENT, "vllm": vllm_targets.REQUIREMENT}


@pytest.mark.parametrize("extra", sorted(ADAPTERS))
def test_pyproject_extra_is_the_adapters_requirement(extra):
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert [Requirement(r) for r in extras[extra]] == [ADAPTERS[extra]]


def test_packaging_is_a_dependency():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "packaging" in {Requirement(d).name for d in deps}


@pytest.mark.parametrize("version, known", [
    ("0.10.2", False), ("0.11.0", True), ("0.33.0", True), ("0.33.1", True), ("0.34.0", True),
    ("0.34.0+cu130", True), ("0.34.1.dev3+g1234abc", True), ("0.35.0rc1", False), ("0.35.0", False),
])
def test_vllm_checked_range(version, known):
    assert vllm_targets.is_known(version) is known


@pytest.mark.parametrize("version, era", [
    ("0.5.10", None), ("0.5.11", "0.5.11-0.5.12"), ("0.5.16", "0.5.13-0.5.16"), ("0.5.23.post1", "0.5.17+"),
    ("0.6.0", "0.5.17+"),
])
def test_sglang_eras(version, era):
    found = sglang_targets.era_for(sglang_targets.parse(version))
    assert (found and found.name) == era


def test_sglang_checked_range_ends_at_the_newest_checked_release():
    assert packages.checked(sglang_targets.REQUIREMENT, Version("0.5.23"))
    assert not packages.checked(sglang_targets.REQUIREMENT, Version("0.5.24"))


def test_lowest_is_the_ge_bound():
    assert packages.lowest(vllm_targets.REQUIREMENT) == Version("0.11.0")
    assert packages.lowest(sglang_targets.REQUIREMENT) == Version("0.5.11")


@pytest.mark.parametrize("module, engine", [(sglang, "sglang"), (vllm, "vllm")])
def test_unparsable_version_is_one_clear_line(monkeypatch, module, engine):
    targets = sglang_targets if engine == "sglang" else vllm_targets
    monkeypatch.setattr(targets, "installed_version", lambda: "not-a-version")
    (support,) = module.attn_sched_discover()
    assert not support.supported
    assert support.reason.startswith(f"unparsable {engine} version 'not-a-version'")
    assert "PEP 440" in support.reason and str(targets.REQUIREMENT) in support.reason
    assert "\n" not in support.reason


def test_vllm_discover_names_the_checked_range_for_newer_releases(monkeypatch):
    monkeypatch.setattr(vllm_targets, "installed_version", lambda: "0.35.0")
    (support,) = vllm.attn_sched_discover()
    assert not support.supported and "<0.35" in support.reason
    monkeypatch.setattr(vllm_targets, "installed_version", lambda: "0.33.1")
    monkeypatch.setattr(vllm_targets, "has_composite_fa3", lambda: False)
    (support,) = vllm.attn_sched_discover()
    assert support.supported and support.reason == ""


def test_prefix_lm_models_are_said_to_get_nothing(monkeypatch):
    from attn_sched_plugin.records import AdapterReport

    monkeypatch.setattr(vllm_targets, "installed_version", lambda: "0.34.0")
    for composite, note in ((True, vllm.NOTHING_FOR_PREFIX_LM), (False, "")):
        monkeypatch.setattr(vllm_targets, "has_composite_fa3", lambda c=composite: c)
        (support,) = vllm.attn_sched_discover()
        assert support.supported and support.reason == note
    line = AdapterReport("vllm", "0.34.0", "vllm_flash_attn", True, covered=["x"], note=vllm.NOTHING_FOR_PREFIX_LM)
    assert line.one_line().endswith("covered: x; " + vllm.NOTHING_FOR_PREFIX_LM)
    assert "Gemma-3" in vllm.NOTHING_FOR_PREFIX_LM and "get nothing" in vllm.NOTHING_FOR_PREFIX_LM
