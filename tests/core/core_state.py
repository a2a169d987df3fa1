"""Reset of the core's process-wide state, shared by the autouse fixture and the hypothesis tests."""

from __future__ import annotations

from attn_sched_plugin import activation, once, switches
from attn_sched_plugin.process import Process


def fresh_process() -> Process:
    """A new ``activation.PROCESS`` (the old one's CUDAGraph wrappers undone), as a new engine process has."""
    activation.PROCESS.graphs.uninstall()
    activation.PROCESS = Process()
    return activation.PROCESS


def reset_plugin_state() -> None:
    """Forget everything the core remembers process-wide, so each test (or example) starts from nothing."""
    switches.reload(env={})
    fresh_process()
    once.reset()
