"""Reset of the core's process-wide state, shared by the autouse fixture and the hypothesis tests."""

from __future__ import annotations

from attn_sched_plugin import activation, graphs, guard, interceptor, once, runtime, stats, switches, verify


def reset_plugin_state() -> None:
    """Forget everything the core remembers process-wide, so each test (or example) starts from nothing."""
    switches.reload(env={})
    runtime._open.clear()  # open steps of threads earlier tests started
    runtime.new_step()
    stats.OBSERVER.reset()
    interceptor._rejected.clear()
    graphs.reset()
    once.reset()
    verify._reported.clear()
    activation._installed.clear()
    guard.reset()
