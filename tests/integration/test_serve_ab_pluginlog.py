"""The plugin's lines in server logs: every process told apart, summaries read tolerantly.

Summary lines come from the plugin's own ``stats.summary_line()`` (so a format change there is
tested here too), plus a hand-written future format with graph replays and other punctuation.
"""

from __future__ import annotations

from collections import Counter

import pytest

from attn_sched_plugin import stats
from attn_sched_plugin.cache import StepTally
from integration.serve_ab import pluginlog


@pytest.fixture
def summary(monkeypatch):
    """The plugin's real summary line after the given step tallies."""
    def make(*tallies: StepTally) -> str:
        observer = stats.StatsObserver()
        monkeypatch.setattr(stats, "OBSERVER", observer)
        for t in tallies:
            observer.attn_sched_step_end(t)
        return stats.summary_line()
    return make


def tally(calls, injected, computed, **passthrough):
    return StepTally(step=1, calls=calls, injected=injected, computed=computed, passthrough=Counter(passthrough))


def test_real_summary_line_is_read(summary):
    line = summary(tally(66, 64, 1, sglang_outside_fa_backend=2), tally(64, 64, 1))
    got = pluginlog.parse_summary(line)
    assert got == {"launches_avoided": 126, "calls": 130, "passthrough": {"sglang_outside_fa_backend": 2},
                   "replays": None}
    assert pluginlog.parse_summary(summary())["passthrough"] == {}  # "passed through: none"


def test_future_wording_with_replays_is_read():
    line = ("attn-sched: 5000 FA3 calls in 80 steps (graph replays: 70); metadata computed 80, injected 4950, "
            "prepare launches avoided: 4870; passed through: pack_gqa_false = 30, sglang_outside_fa_backend=20; "
            "sglang: native_mismatch=0")
    assert pluginlog.parse_summary(line) == {"launches_avoided": 4870, "calls": 5000, "replays": 70,
                                             "passthrough": {"pack_gqa_false": 30, "sglang_outside_fa_backend": 20}}
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
    assert got["summary"] == {"processes": 2, "launches_avoided": 126 + 63, "passthrough": {}, "replays": None}


def test_vllm_log_and_seed_baseline_lines():
    log = "\n".join([
        "(APIServer pid=10) 2026-11-27 10:00:00,001 INFO attn-sched: disabled by ATTN_SCHED_DISABLE; vllm left "
        "untouched",
        "(EngineCore_DP0 pid=11) 2026-11-27 10:00:01,002 INFO attn-sched: disabled by ATTN_SCHED_DISABLE; vllm left "
        "untouched",
        "(Worker_TP0 pid=12) attn-sched-seed-baseline: pid 12: REPLACE hook registered on x (returns None)",
        "(Worker_TP1 pid=13) attn-sched: 10 FA3 calls in 1 steps; prepare launches avoided 9; passed through: none",
        "(Worker_TP0 pid=12) attn-sched: 10 FA3 calls in 1 steps; prepare launches avoided 8; passed through: a=1",
    ])
    lines = pluginlog.extract(log)
    assert [pluginlog.source(line) for line in lines] == ["APIServer pid=10", "EngineCore_DP0 pid=11",
                                                          "Worker_TP0 pid=12", "Worker_TP1 pid=13",
                                                          "Worker_TP0 pid=12"]
    got = pluginlog.digest(lines)
    assert got["activation"] == {"disabled": 2, "seed-baseline": 1}
    assert got["summary"] == {"processes": 2, "launches_avoided": 17, "passthrough": {"a": 1}, "replays": None}


def test_no_plugin_lines():
    assert pluginlog.digest(pluginlog.extract("server up\nnothing else\n")) == {"activation": {}, "summary": None}
