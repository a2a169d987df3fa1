"""The plugin's lines in server logs: every process told apart, summaries read.

Summary lines come from the plugin's own ``stats.summary_line()``, so a format change there is
tested here too.
"""

from __future__ import annotations

from collections import Counter

import pytest

from attn_sched_plugin import activation, graphs, stats
from attn_sched_plugin.cache import StepTally
from attn_sched_plugin.process import Process
from integration.serve_ab import pluginlog


@pytest.fixture
def summary(monkeypatch):
    """The plugin's real summary line after the given step tallies."""
    def make(*tallies: StepTally) -> str:
        process = Process()
        monkeypatch.setattr(activation, "PROCESS", process)
        for t in tallies:
            process.observer.attn_sched_step_end(t)
        return stats.summary_line()
    return make


def tally(calls, injected, computed, **passthrough):
    return StepTally(step=1, calls=calls, injected=injected, computed=computed, passthrough=Counter(passthrough))


def test_real_summary_line_is_read(summary, monkeypatch):
    monkeypatch.setattr(graphs.GraphCounts, "totals", lambda self: {"graphs": 3, "replays": 70, "launches_avoided": 4410})
    line = summary(tally(66, 64, 1, sglang_outside_fa_backend=2), tally(64, 64, 1))
    got = pluginlog.parse_summary(line)
    assert got == {"launches_avoided": 126 + 4410, "graph_launches_avoided": 4410, "replays": 70, "graphs": 3,
                   "calls": 130, "passthrough": {"sglang_outside_fa_backend": 2}}
    assert pluginlog.parse_summary(summary())["passthrough"] == {}  # "passed through: none"
    assert pluginlog.parse_summary("attn-sched: active for vllm 0.26.0 with FA3 build vllm") is None


def test_sglang_log_every_process_latest_summary(summary):
    first, later = summary(tally(64, 64, 1)), summary(tally(64, 64, 1), tally(64, 64, 1))
    log = "\n".join([
        "[2026-11-27 10:00:01] attn-sched: inactive for sglang 0.5.16: sgl_kernel is not imported in this process yet",
        "[2026-11-27 10:00:02] Loaded plugin attn_sched from group sglang.srt.plugins",
        "[2026-11-27 10:00:20 TP0] attn-sched: active for sglang 0.5.16 with FA3 build sgl_kernel; covered: x",
        "[2026-11-27 10:00:20 TP1] attn-sched: active for sglang 0.5.16 with FA3 build sgl_kernel; covered: x",
        f"[2026-11-27 10:00:25 TP0] {first}",
        f"[2026-11-27 10:00:25 TP1] {first}",
        f"[2026-11-27 10:00:30 TP0] {later}",
        "[2026-11-27 10:00:31 TP0] Decode batch, #running-req: 4, gen throughput (token/s): 500.0",
    ])
    lines = pluginlog.extract(log)
    assert len(lines) == 6 and all("attn-sched" in line for line in lines)
    assert [pluginlog.source(line) for line in lines] == ["main", "TP0", "TP1", "TP0", "TP1", "TP0"]
    got = pluginlog.digest(lines)
    assert got["activation"] == {"inactive": 1, "active": 2}
    assert got["summary"] == {"processes": 2, "launches_avoided": 126 + 63, "graph_launches_avoided": 0,
                              "replays": 0, "graphs": 0, "calls": 128 + 64, "passthrough": {}}


def test_vllm_log_and_seed_baseline_lines():
    log = "\n".join([
        "(APIServer pid=10) 2026-11-27 10:00:00,001 INFO attn-sched: disabled by ATTN_SCHED_DISABLE; vllm left "
        "untouched",
        "(EngineCore_DP0 pid=11) 2026-11-27 10:00:01,002 INFO attn-sched: disabled by ATTN_SCHED_DISABLE; vllm left "
        "untouched",
        "(Worker_TP0 pid=12) attn-sched-seed-baseline: pid 12: REPLACE hook registered on x (returns None)",
        f"(Worker_TP1 pid=13) {_line(9, 0, 0, 0, 9, 10, 'none')}",
        f"(Worker_TP0 pid=12) {_line(8 + 640, 640, 10, 1, 8, 10, 'a=1')}",
    ])
    lines = pluginlog.extract(log)
    assert [pluginlog.source(line) for line in lines] == ["APIServer pid=10", "EngineCore_DP0 pid=11",
                                                          "Worker_TP0 pid=12", "Worker_TP1 pid=13",
                                                          "Worker_TP0 pid=12"]
    got = pluginlog.digest(lines)
    assert got["activation"] == {"disabled": 2, "seed-baseline": 1}
    assert got["summary"] == {"processes": 2, "launches_avoided": 17 + 640, "graph_launches_avoided": 640,
                              "replays": 10, "graphs": 1, "calls": 20, "passthrough": {"a": 1}}


def _line(total, graph, replays, graphs, intercepted, calls, passed) -> str:
    return (f"attn-sched: prepare launches avoided {total}: {graph} in {replays} CUDA-graph replays ({graphs} graphs "
            f"captured), {intercepted} in {calls} intercepted FA3 calls (1 steps; metadata computed 1, injected "
            f"{calls}); passed through: {passed}")


def test_no_plugin_lines():
    assert pluginlog.digest(pluginlog.extract("server up\nnothing else\n")) == {"activation": {}, "summary": None}
