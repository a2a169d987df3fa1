"""pluggy: the stats observer, custom observers, and adapter discovery through activation."""

from __future__ import annotations

import logging

import pytest
from core_calls import i32, kvcache_call

from attn_sched_plugin import activation, interceptor, runtime, stats, switches
from attn_sched_plugin.hookspecs import hookimpl
from attn_sched_plugin.records import AdapterReport


@pytest.fixture
def fa(ref):
    return interceptor.wrap(ref.flash_attn_with_kvcache, ref.build())


def test_stats_fold_step_tallies_and_include_the_open_step(fa):
    call = kvcache_call(b=2)
    for _ in range(3):
        fa(**call)
    fa(**dict(call, cache_seqlens=None))  # one pass-through
    runtime.new_step()
    fa(**call)
    fa(**call)
    s = stats.snapshot()
    assert s == {"intercepted": {"steps": 1, "calls": 6, "injected": 5, "computed": 2, "verify_mismatches": 0,
                                 "launches_avoided": 3},
                 "graph_replays": {"graphs": 0, "replays": 0, "launches_avoided": 0},
                 "launches_avoided": 3, "passthrough": {"no_seqused_k": 1}, "engine": {}}
    runtime.new_step()
    # folded once, not twice
    assert stats.snapshot()["intercepted"]["steps"] == 2 and stats.snapshot()["intercepted"]["calls"] == 6


def test_empty_steps_are_not_counted(fa):
    runtime.new_step()
    runtime.new_step()
    assert stats.snapshot()["intercepted"]["steps"] == 0


def test_summary_line_mentions_the_counters(fa):
    fa(**kvcache_call(b=2))
    fa(**kvcache_call(b=2, cache_seqlens=i32([1, 2]).long()))
    line = stats.summary_line()
    assert "in 2 intercepted FA3 calls" in line and "computed 1" in line and "seqused_k_layout=1" in line
    assert "0 CUDA-graph replays" in line


@pytest.mark.parametrize("interval, periodic", [("0", 0), ("1e-9", 2)])
def test_summary_interval_zero_logs_only_at_exit(fa, caplog, interval, periodic):
    switches.reload(env={"ATTN_SCHED_SUMMARY_INTERVAL": interval})

    def summaries() -> int:
        return sum("FA3 calls" in m for m in caplog.messages)

    with caplog.at_level(logging.INFO, logger="attn_sched_plugin"):
        for _ in range(2):
            fa(**kvcache_call(b=2))
            runtime.new_step()
        assert summaries() == periodic
        activation._at_exit()
    assert summaries() == periodic + 1


def test_custom_observer_sees_each_computation_and_step_end(fa, register):
    class Observer:
        def __init__(self):
            self.events, self.tallies = [], []

        @hookimpl
        def attn_sched_metadata_computed(self, event):
            self.events.append(event)

        @hookimpl
        def attn_sched_step_end(self, tally):
            self.tallies.append(tally)

    obs = register(Observer(), "test-observer")
    call = kvcache_call(b=3, s_q=2, page_size=4, pages_per_seq=5)
    for _ in range(4):
        fa(**call)
    fa(**dict(call, causal=True))
    assert len(obs.events) == 2 and obs.tallies == []
    event = obs.events[0]
    assert (event.provider, event.batch_size, event.max_seqlen_q, event.max_seqlen_k, event.page_size) == (
        "torch.ops.attn_sched_ref", 3, 2, 20, 4)
    assert event.context == ("cpu", 0, 0) and event.numel == 2 and event.step == runtime.state().tally.step
    runtime.new_step()
    (tally,) = obs.tallies
    assert (tally.calls, tally.injected, tally.computed) == (5, 5, 2)


class FakeAdapter:
    def __init__(self):
        self.installs, self.uninstalls = [], []

    @hookimpl
    def attn_sched_install(self, engine):
        if engine != "fake":
            return None
        self.installs.append(engine)
        return AdapterReport(engine="fake", version="1.0", fa3_build="torch.ops.attn_sched_ref", active=True,
                             covered=["decode"], wrapped=["fake.attention.fa3"])

    @hookimpl
    def attn_sched_uninstall(self, engine):
        self.uninstalls.append(engine)


def test_instrument_finds_a_registered_adapter_once(register):
    adapter = register(FakeAdapter(), "fake-adapter")
    report = activation.instrument("fake")
    assert isinstance(report, AdapterReport) and report.engine == "fake" and report.active
    assert activation.instrument("fake") is report  # idempotent
    assert adapter.installs == ["fake"]
    assert activation.installed() == {"fake": report}
    activation.uninstrument("fake")
    assert adapter.uninstalls == ["fake"] and activation.installed() == {}
    activation.uninstrument("fake")  # undoing twice does nothing
    assert adapter.uninstalls == ["fake"]


def test_instrument_without_an_adapter_patches_nothing(register):
    adapter = register(FakeAdapter(), "fake-adapter")
    assert activation.instrument("no-such-engine") is None
    assert adapter.installs == []
    activation.uninstrument("no-such-engine")
    assert adapter.uninstalls == []


def test_instrument_honours_disable(register):
    adapter = register(FakeAdapter(), "fake-adapter")
    switches.reload(env={"ATTN_SCHED_DISABLE": "1"})
    assert activation.instrument("fake") is None
    assert adapter.installs == []


def test_a_failing_adapter_does_not_raise(register, caplog):
    class Broken:
        @hookimpl
        def attn_sched_install(self, engine):
            raise ImportError("engine internals moved")

    register(Broken(), "broken-adapter")
    assert activation.instrument("fake") is None
    assert any("engine internals moved" in r.getMessage() for r in caplog.records)


def test_one_report_line():
    active = AdapterReport(engine="e", version="1", fa3_build="b", active=True, covered=["decode", "extend"])
    inactive = AdapterReport(engine="e", version="1", fa3_build="b", active=False, reason="no FA3")
    assert "\n" not in active.one_line() and "decode, extend" in active.one_line()
    assert "inactive" in inactive.one_line() and "no FA3" in inactive.one_line()


def test_adapter_engine_counters_reach_stats_and_the_summary(register):
    class Adapter:
        @hookimpl
        def attn_sched_engine_counters(self):
            return {"fake": {"native_metadata_headdim_v": 3}}

    assert stats.snapshot()["engine"] == {}
    register(Adapter(), "fake-engine-counters")
    assert stats.snapshot()["engine"] == {"fake": {"native_metadata_headdim_v": 3}}
    assert "fake: native_metadata_headdim_v=3" in stats.summary_line()
