"""Fixtures for the core CPU suite: the reference FA3 and a clean per-test plugin state."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `tests.reference` is imported as a namespace package from the repo root
    sys.path.insert(0, str(ROOT))

from attn_sched_plugin import activation, runtime, switches  # noqa: E402
from core_state import reset_plugin_state  # noqa: E402
from tests.reference import fa3_reference  # noqa: E402


@pytest.fixture(autouse=True)
def clean_state():
    reset_plugin_state()
    yield
    reset_plugin_state()
    switches._current = None  # the next reader re-reads the real environment


@pytest.fixture(scope="session")
def ref():
    return fa3_reference


@pytest.fixture
def tally():
    """This thread's open step counters (a callable: the step object changes with new_step)."""
    return lambda: runtime.state().tally


@pytest.fixture
def register():
    """Register plugins on the process manager for one test only (the last registered is called first)."""
    pm = activation.PROCESS.hooks.manager
    added = []

    def add(plugin, name):
        pm.register(plugin, name=name)
        added.append(plugin)
        return plugin

    yield add
    for plugin in added:
        pm.unregister(plugin)
