"""Reset of the core's process-wide state, shared by the autouse fixture and the hypothesis tests."""

from __future__ import annotations

from attn_sched_plugin import activation, graphs, guard, interceptor, runtime, stats, switches, verify


def reset_plugin_state() -> None:
    """Forget everything the core remembers process-wide, so each test (or example) starts from nothing."""
    switches.reload(env={})
    runtime.new_step()
    stats.OBSERVER.reset()
    interceptor._rejected.clear()
    graphs.reset()
    interceptor._logged_errors.clear()
    verify._reported.clear()
    activation._installed.clear()
    guard.reset()
