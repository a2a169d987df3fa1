"""Fault injection on the core's paths (issue 22): nothing of ours, and no hook of a third party, raises into
the engine; FA3's own errors reach the engine exactly as FA3 alone raises them; switches fail closed; the
capture-id lookup reads the process's one driver; the statistics stay bounded and true.

Each test checks that the engine's own call still ran and returned FA3-alone output (the CPU reference), or
that the error FA3 alone raises was raised.
"""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch
from core_calls import kvcache_call, varlen_call

from attn_sched_plugin import activation, context, errors, graphs, interceptor, observer, once, process, runtime, stats, switches
from attn_sched_plugin.adapters.routing import EntryRoute
from attn_sched_plugin.binding import KVCACHE
from attn_sched_plugin.hookspecs import hookimpl
from attn_sched_plugin.providers import Build, Provider
from attn_sched_plugin.records import AdapterReport
from attn_sched_plugin.verify import bitwise_equal

ROOT = Path(__file__).resolve().parents[2]
KEEP = ("q", "k_cache", "v_cache", "cache_seqlens", "page_table")


@pytest.fixture
def fa(ref):
    return interceptor.wrap(ref.flash_attn_with_kvcache, ref.build())


def warnings_with(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def short_call(**shape) -> dict:
    return {k: v for k, v in kvcache_call(**shape).items() if k in KEEP}


class Raising:
    """A third party's observer and counters hooks, each raising."""

    @hookimpl
    def attn_sched_step_end(self, tally):
        raise ValueError("observer broke at step end")

    @hookimpl
    def attn_sched_metadata_computed(self, event):
        raise ValueError("observer broke on a computation")

    @hookimpl
    def attn_sched_engine_counters(self):
        raise ValueError("counters broke")


class Counting:
    @hookimpl
    def attn_sched_engine_counters(self):
        return {"fake": {"native_mismatch": 2}}


# --- 1. no hook raises into the engine ---------------------------------------------------------------

def test_raising_observers_do_not_reach_the_engine(ref, fa, register, tally, caplog):
    register(Raising(), "raising-observer")
    call = kvcache_call(b=2)
    with caplog.at_level(logging.WARNING, logger="attn_sched_plugin"):
        outs = [fa(**call) for _ in range(3)]
        runtime.new_step()  # the engine's metadata callback: the step-end observer raises
        fa(**call)
        runtime.new_step()
    assert all(bitwise_equal(o, ref.flash_attn_with_kvcache(**call)) for o in outs)
    s = stats.snapshot()
    # the computation was injected (the raising observer did not turn it into a pass-through), and the
    # built-in observer still folded both steps
    assert s["intercepted"]["steps"] == 2 and s["intercepted"]["injected"] == 4 and s["passthrough"] == {}
    assert len(warnings_with(caplog, "observer broke at step end")) == 1
    assert len(warnings_with(caplog, "observer broke on a computation")) == 1
    assert all("'raising-observer'" in m for m in warnings_with(caplog, "observer broke"))


def test_raising_counters_hook_leaves_snapshot_summary_and_exit_working(register, caplog):
    register(Counting(), "counting-adapter")
    register(Raising(), "raising-adapter")  # called first
    with caplog.at_level(logging.INFO, logger="attn_sched_plugin"):
        assert stats.snapshot()["engine"] == {"fake": {"native_mismatch": 2}}
        assert "fake: native_mismatch=2" in stats.summary_line()
        activation._at_exit()
    assert len(warnings_with(caplog, "counters broke")) == 1


def test_counters_hook_returning_garbage_is_left_out(register, caplog):
    class Garbage:
        @hookimpl
        def attn_sched_engine_counters(self):
            return ["not", "a", "dict"]

    register(Garbage(), "garbage-adapter")
    assert stats.snapshot()["engine"] == {}
    assert len(warnings_with(caplog, "'garbage-adapter'")) == 1


class FakeGraph:
    """``torch.cuda.CUDAGraph`` as activation.PROCESS.graphs.install sees it; ``replay`` is the real work."""

    runs = 0

    def capture_begin(self, pool=None, capture_error_mode="global"):
        pass

    def capture_end(self):
        pass

    def replay(self):
        type(self).runs += 1


@pytest.fixture
def fake_graph_class(monkeypatch):
    cls = type("FakeGraph", (FakeGraph,), {"runs": 0})
    monkeypatch.setattr(torch.cuda, "CUDAGraph", cls)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: SimpleNamespace(cuda_stream=5))
    monkeypatch.setattr(context, "capture_id", lambda stream: 77)
    yield cls
    activation.PROCESS.graphs.uninstall()


def test_a_raising_summary_never_stops_the_real_replay(fake_graph_class, caplog, monkeypatch):
    switches.reload(env={"ATTN_SCHED_SUMMARY_INTERVAL": "1e-9"})

    def broken_summary():
        raise RuntimeError("summary broke")

    monkeypatch.setattr(activation.PROCESS.observer, "summary_line", broken_summary)
    activation.PROCESS.graphs.install()
    activation.PROCESS.graphs.book(77, 3)
    graph = fake_graph_class()
    torch.cuda.CUDAGraph.capture_end(graph)
    for _ in range(2 * graphs.SUMMARY_EVERY):
        torch.cuda.CUDAGraph.replay(graph)
        graphs.replayed(graph)  # also called directly: it never raises either
    assert fake_graph_class.runs == 2 * graphs.SUMMARY_EVERY
    assert activation.PROCESS.graphs.totals() == {"graphs": 1, "replays": 4 * graphs.SUMMARY_EVERY,
                               "launches_avoided": 12 * graphs.SUMMARY_EVERY}
    assert len(warnings_with(caplog, "summary broke")) == 1


class FakeAdapter:
    def __init__(self):
        self.installs = []

    @hookimpl
    def attn_sched_install(self, engine):
        self.installs.append(engine)
        return AdapterReport(engine=engine, version="1.0", fa3_build="torch.ops.attn_sched_ref", active=False,
                             reason="test")

    @hookimpl
    def attn_sched_uninstall(self, engine):
        raise RuntimeError("uninstall broke")


def test_a_raising_third_party_adapter_does_not_block_the_built_in_one(register, caplog):
    builtin = register(FakeAdapter(), "builtin-adapter")

    class Broken:
        @hookimpl
        def attn_sched_install(self, engine):
            raise ImportError("engine internals moved")

    register(Broken(), "third-party-adapter")  # registered last: pluggy calls it first
    with caplog.at_level(logging.INFO, logger="attn_sched_plugin"):
        report = activation.instrument("fake")
        activation.uninstrument("fake")  # a raising uninstall does not reach the engine either
    assert report is not None and report.engine == "fake" and builtin.installs == ["fake"]
    (failure,) = warnings_with(caplog, "engine internals moved")
    assert "'third-party-adapter'" in failure and "attn_sched_install" in failure
    assert len(warnings_with(caplog, "uninstall broke")) == 1


# --- 2. FA3's own errors propagate; only FA3's refusal of the metadata is retried ----------------------

@pytest.mark.parametrize("error", [torch.OutOfMemoryError, torch.AcceleratorError])
def test_oom_and_cuda_errors_propagate_as_fa3_alone_raises_them(ref, tally, caplog, error):
    calls = []
    raised = error("CUDA out of memory. Tried to allocate 2.00 GiB" if error is torch.OutOfMemoryError
                   else "CUDA error: an illegal memory access was encountered")

    def entry(q, k_cache, v_cache, cache_seqlens=None, page_table=None, scheduler_metadata=None):
        calls.append(scheduler_metadata)
        raise raised

    fa = interceptor.wrap(entry, ref.build())
    with caplog.at_level(logging.WARNING, logger="attn_sched_plugin"):
        with pytest.raises(error) as info:
            fa(**short_call())
    assert info.value is raised and len(calls) == 1  # no retry
    assert activation.PROCESS.rejected == set() and "fa3_rejected" not in tally().passthrough
    assert warnings_with(caplog, "rejected") == []


def test_a_transient_oom_with_metadata_is_not_taken_for_a_refusal(ref, tally):
    def entry(q, k_cache, v_cache, cache_seqlens=None, page_table=None, scheduler_metadata=None):
        if not entry.failed:
            entry.failed = True
            raise torch.OutOfMemoryError("CUDA out of memory")
        return q * 2

    entry.failed = False
    fa = interceptor.wrap(entry, ref.build())
    call = short_call()
    with pytest.raises(torch.OutOfMemoryError):
        fa(**call)
    assert torch.equal(fa(**call), call["q"] * 2)
    assert activation.PROCESS.rejected == set() and tally().injected == 1  # the next call is still shared


def wrong_size(build: Build) -> Build:
    """A build like ``build`` whose metadata has the wrong size: the reference FA3 refuses it with FA3's message."""
    provider = build.provider
    wrong = Provider(f"{provider.name}-wrong-size", provider.namespace, seqlen_k_from_call=provider.seqlen_k_from_call)
    wrong.compute = lambda sig, batch: torch.zeros(3, dtype=torch.int32)
    return build._replace(provider=wrong)


@pytest.mark.parametrize("verify", ["0", "1"])
@pytest.mark.parametrize("flavour", ["upstream", "vllm"])
def test_fa3_refusing_the_metadata_is_retried_also_under_verify(ref, tally, caplog, monkeypatch, verify, flavour):
    switches.reload(env={"ATTN_SCHED_VERIFY": verify})
    if flavour == "upstream":
        fn, call, build = ref.flash_attn_with_kvcache, kvcache_call(b=2), ref.build()
        message = "scheduler_metadata must have shape (metadata_size)"
    else:
        fn, call, build = ref.flash_attn_varlen_func, varlen_call(b=2), ref.vllm_build()
        message = "scheduler_metadata dimension 0 must have size 2, got 3"
    fa = interceptor.wrap(fn, wrong_size(build))
    with caplog.at_level(logging.WARNING, logger="attn_sched_plugin"):
        outs = [fa(**call) for _ in range(2)]
    assert all(bitwise_equal(o, fn(**call)) for o in outs)
    assert tally().passthrough == {"fa3_rejected": 2} and tally().injected == 0
    (line,) = warnings_with(caplog, "rejected")
    assert message in line


def test_the_reference_refuses_with_fa3s_own_messages(ref):
    call = kvcache_call(b=2)
    wrong_dtype = torch.tensor([0x5A3F, 1], dtype=torch.int64)
    for metadata, message in ((torch.zeros(3, dtype=torch.int32), "scheduler_metadata must have shape"),
                              (wrong_dtype, "scheduler_metadata must have dtype int32")):
        with pytest.raises(RuntimeError, match=message.replace("(", r"\(")) as info:
            ref.flash_attn_with_kvcache(**call, scheduler_metadata=metadata)
        assert errors.is_rejection(info.value)
    with pytest.raises(RuntimeError, match="must have 1 dimensions, got 2") as info:
        ref.flash_attn_varlen_func(**varlen_call(b=2), scheduler_metadata=torch.zeros(1, 2, dtype=torch.int32))
    assert errors.is_rejection(info.value)
    assert not errors.is_rejection(RuntimeError("CUDA error: misaligned address"))
    assert not errors.is_rejection(torch.AcceleratorError("scheduler_metadata must have shape (n)"))


# --- 3. the kill switch fails closed ---------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["2", "disable", "y", "enabled"])
def test_an_unreadable_kill_switch_turns_the_plugin_off(register, ref, caplog, raw):
    adapter = register(FakeAdapter(), "fake-adapter")
    with caplog.at_level(logging.INFO, logger="attn_sched_plugin"):
        switches.reload(env={"ATTN_SCHED_DISABLE": raw})
        assert activation.instrument("fake") is None
    assert adapter.installs == []
    assert interceptor.wrap(ref.flash_attn_with_kvcache, ref.build()) is ref.flash_attn_with_kvcache
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"ATTN_SCHED_DISABLE={raw!r} is not readable" in line and "the plugin is therefore off" in line
    assert "1/true/yes/on or 0/false/no/off" in line


def test_other_switches_keep_their_defaults_on_bad_values():
    s = switches.reload(env={"ATTN_SCHED_VERIFY": "2", "ATTN_SCHED_SUMMARY_INTERVAL": "soon",
                             "ATTN_SCHED_SGLANG_MODE": "x"})
    assert (s.disabled, s.verify, s.summary_interval_s, s.sglang_mode) == (False, False, 600.0, "replace")


# --- 4. capture ids: the process's one driver, the tensors' device -----------------------------------

STUB_DRIVER = """
typedef unsigned long long u64;
int cuStreamGetCaptureInfo(void *stream, int *status, u64 *id) { *status = 1; *id = 4242; return 0; }
"""
STUB_RUNTIME = """
typedef unsigned long long u64;
int cudaStreamGetCaptureInfo(void *stream, int *status, u64 *id, void *a, void *b, void *c)
{ *status = 1; *id = 13; return 0; }
"""
PROBE = textwrap.dedent("""
    import logging, sys
    logging.basicConfig(stream=sys.stderr)
    from attn_sched_plugin import context
    maps = lambda: open("/proc/self/maps").read()
    print(context.capture_id(7), context.capture_ids_readable(), "libcudart.so.13" in maps())
""")


def _stub(directory: Path, soname: str, source: str) -> None:
    c = directory / f"{soname}.c"
    c.write_text(source)
    subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(directory / soname), str(c)],
                   check=True)


def _probe(libs: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": str(libs), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)


def test_capture_ids_come_from_the_driver_not_a_second_runtime(tmp_path):
    """A process where the loader also finds a CUDA 13 runtime (torch here loaded none): the id is the driver's,
    and no runtime was loaded by the lookup."""
    _stub(tmp_path, "libcuda.so.1", STUB_DRIVER)
    _stub(tmp_path, "libcudart.so.13", STUB_RUNTIME)
    result = _probe(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["4242", "True", "False"]


def test_without_a_driver_capture_ids_are_unknown_and_it_says_so(tmp_path):
    _stub(tmp_path, "libcudart.so.13", STUB_RUNTIME)
    result = _probe(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["-1", "False", "False"]
    assert result.stderr.count("cuStreamGetCaptureInfo not readable from libcuda.so.1") == 1


def test_activation_of_an_active_adapter_says_when_capture_ids_are_unreadable(register, caplog, monkeypatch):
    class Active(FakeAdapter):
        @hookimpl
        def attn_sched_install(self, engine):
            return AdapterReport(engine=engine, version="1.0", fa3_build="b", active=True, covered=["decode"])

    register(Active(), "active-adapter")
    monkeypatch.setattr(context, "DRIVER", "libcuda-absent-for-this-test.so.1")
    monkeypatch.setattr(activation.PROCESS.graphs, "install", lambda: None)
    context._capture_info_fn.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="attn_sched_plugin"):
            assert activation.instrument("fake").active
    finally:
        context._capture_info_fn.cache_clear()
    assert len(warnings_with(caplog, "calls inside CUDA-graph captures pass through")) == 1


def test_the_context_is_the_tensors_device_and_its_stream(monkeypatch):
    asked = []
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda device: 100 + device, raising=False)
    monkeypatch.setattr(context, "capture_id", lambda stream: asked.append(stream) or 9)
    on_device_1 = SimpleNamespace(is_cuda=True, get_device=lambda: 1)
    # the current device (0) is not capturing, but the call's device (1) is asked for its own stream's capture
    assert context.current(on_device_1) == (1, 101, 9) and asked == [101]


# --- 5. verify checks what serving runs: eager steps go through the wrapper ----------------------------

def engine_module(fn) -> ModuleType:
    module = ModuleType("fake_engine_backend")
    module.flash_attn_with_kvcache = fn
    return module


def test_under_verify_eager_steps_are_compared_against_fa3_alone(ref, tally, caplog):
    def planted(q, k_cache, v_cache, cache_seqlens=None, page_table=None, scheduler_metadata=None):
        return q + (1 if scheduler_metadata is not None else 0)

    switches.reload(env={"ATTN_SCHED_VERIFY": "1"})
    module = engine_module(planted)
    route = EntryRoute(module, "flash_attn_with_kvcache", interceptor.wrap(planted, ref.build()))
    call = short_call()
    step = tally().step
    route.eager()  # the engine's eager metadata callback
    assert tally().step != step  # each eager step is a step
    out = module.flash_attn_with_kvcache(**call)  # the engine's own code
    assert torch.equal(out, call["q"]) and tally().verify_mismatches == 1
    route.release()  # the engine's guard, or uninstall: FA3 itself again
    assert module.flash_attn_with_kvcache is planted


def test_without_verify_eager_steps_call_fa3_untouched(ref):
    module = engine_module(ref.flash_attn_with_kvcache)
    route = EntryRoute(module, "flash_attn_with_kvcache", interceptor.wrap(ref.flash_attn_with_kvcache, ref.build()))
    route.capture()
    route.eager()
    assert module.flash_attn_with_kvcache is ref.flash_attn_with_kvcache


# --- 6. bounded memory, true statistics ------------------------------------------------------------------

def test_2000_distinct_failures_log_a_bounded_number_of_lines(ref, tally, caplog, monkeypatch):
    provider = ref.provider()
    step = iter(range(10**6))
    monkeypatch.setattr(provider, "compute", lambda sig, batch: (_ for _ in ()).throw(
        ValueError(f"failure number {next(step)}")))
    def entry(q, k_cache, v_cache, cache_seqlens=None, page_table=None, scheduler_metadata=None):
        return q  # FA3 alone, cheaply

    fa = interceptor.wrap(entry, Build(provider, KVCACHE))
    call = short_call()
    with caplog.at_level(logging.WARNING, logger="attn_sched_plugin"):
        for _ in range(2000):
            assert fa(**call) is call["q"]
            runtime.new_step()
    assert len(warnings_with(caplog, "attn-sched")) == once.MAX_MESSAGES + 1  # the last says the rest are not
    assert len(once._seen) <= once.MAX_MESSAGES + 1
    assert stats.snapshot()["passthrough"] == {"plugin_error": 2000}


def test_2000_distinct_refusals_keep_a_bounded_memory(ref):
    def entry(q, k_cache, v_cache, cache_seqlens=None, page_table=None, scheduler_metadata=None, sm_margin=0):
        if scheduler_metadata is not None:
            raise RuntimeError("scheduler_metadata must have shape (metadata_size)")
        return q

    fa = interceptor.wrap(entry, ref.build())
    call = short_call()
    for margin in range(2000):  # a distinct signature each time
        assert fa(**call, sm_margin=margin) is call["q"]
    assert 0 < len(activation.PROCESS.rejected) < 2000
    assert len(activation.PROCESS.rejected) <= process.MAX_REJECTED


def test_captures_that_never_end_keep_a_bounded_memory():
    for capture_id in range(1, 2001):
        activation.PROCESS.graphs.book(capture_id, 1)  # captures that failed midway: capture_end never came
    assert len(activation.PROCESS.graphs._pending) < 2000
    assert len(activation.PROCESS.graphs._pending) <= graphs.MAX_PENDING
    activation.PROCESS.graphs.book(5000, 2)
    graph = SimpleNamespace()
    activation.PROCESS.graphs.captured(graph, 5000)
    graphs.replayed(graph)
    assert activation.PROCESS.graphs.totals() == {"graphs": 1, "replays": 1, "launches_avoided": 2}


def test_a_refusal_inside_a_capture_counts_what_the_replays_run(ref, monkeypatch):
    """The refused call's metadata kernel was recorded and runs at every replay for nothing (-1), next to a
    shape whose metadata serves 3 layers (+2): each replay avoids 1 launch net, as it truly does."""
    monkeypatch.setattr(context, "current", lambda t: ("cpu", 0, 31))
    ok = interceptor.wrap(ref.flash_attn_with_kvcache, ref.build())
    refused = interceptor.wrap(ref.flash_attn_with_kvcache, wrong_size(ref.build()))
    call, other = kvcache_call(b=2), kvcache_call(b=3)
    for _ in range(3):
        assert bitwise_equal(ok(**call), ref.flash_attn_with_kvcache(**call))
        assert bitwise_equal(refused(**other), ref.flash_attn_with_kvcache(**other))
    graph = SimpleNamespace()
    activation.PROCESS.graphs.captured(graph, 31)
    for _ in range(4):
        graphs.replayed(graph)
    assert activation.PROCESS.graphs.totals() == {"graphs": 1, "replays": 4, "launches_avoided": 4}


def test_threads_that_never_end_a_step_are_in_the_snapshot(fa):
    call = kvcache_call(b=2)
    done, release = threading.Event(), threading.Event()

    def overlap_thread():  # like vLLM's dual-batch-overlap threads: FA3 calls, never a metadata callback
        for _ in range(3):
            fa(**call)
        done.set()
        release.wait(10)

    worker = threading.Thread(target=overlap_thread)
    worker.start()
    try:
        assert done.wait(10)
        fa(**call)
        s = stats.snapshot()
    finally:
        release.set()
        worker.join()
    assert s["intercepted"]["calls"] == 4 and s["intercepted"]["injected"] == 4


def test_the_periodic_summary_is_logged_once_when_threads_race(caplog, monkeypatch):
    """Two threads check the interval at the same moment; one summary."""
    switches.reload(env={"ATTN_SCHED_SUMMARY_INTERVAL": "5"})
    activation.PROCESS.observer._last_summary = 0.0
    barrier = threading.Barrier(2, timeout=0.5)

    def monotonic():
        if threading.current_thread() is not threading.main_thread():
            try:
                barrier.wait()  # both threads are inside the check together (where the lock lets them)
            except threading.BrokenBarrierError:
                pass
        return 1000.0

    monkeypatch.setattr(observer.time, "monotonic", monotonic)
    with caplog.at_level(logging.INFO, logger="attn_sched_plugin"):
        threads = [threading.Thread(target=activation.PROCESS.observer.tick) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum("prepare launches avoided" in m for m in caplog.messages) == 1


def test_uninstall_leaves_a_replay_wrapper_installed_after_ours(fake_graph_class):
    activation.PROCESS.graphs.install()
    ours = fake_graph_class.replay

    def theirs(self, *args, **kwargs):
        return ours(self, *args, **kwargs)

    fake_graph_class.replay = theirs
    activation.PROCESS.graphs.uninstall()
    assert fake_graph_class.replay is theirs  # another library's, kept
    assert fake_graph_class.capture_end is FakeGraph.capture_end  # ours, undone


def test_a_collected_graph_keeps_its_replays_in_the_totals():
    class Graph:  # weak-referenceable, as torch.cuda.CUDAGraph is
        pass

    graph = Graph()
    activation.PROCESS.graphs.book(9, 5)
    activation.PROCESS.graphs.captured(graph, 9)
    for _ in range(3):
        graphs.replayed(graph)
    del graph
    gc.collect()
    assert activation.PROCESS.graphs._live == set()
    assert activation.PROCESS.graphs.totals() == {"graphs": 1, "replays": 3, "launches_avoided": 15}
