"""Graph replays are counted (issue 14): N replays of a graph add N x what its capture avoided.

No CUDA here: the capture is simulated by the context a call reports (a capture id), and the
graph by a plain object; the GPU suite (tests/gpu/test_graphs.py) repeats this with real graphs.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from core_calls import kvcache_call

from attn_sched_plugin import activation, arena, context, graphs, interceptor, runtime, stats


@pytest.fixture
def capturing(monkeypatch):
    """``capturing(cid)``: calls report capture ``cid`` (0: not capturing)."""
    state = {"cid": 0}
    monkeypatch.setattr(context, "current", lambda t: ("cpu", 0, state["cid"]))
    return lambda cid: state.update(cid=cid)


def _layers(fa, n, **shape):
    """``n`` layers of one step: the same batch tensors, as engines pass them to every layer."""
    call = kvcache_call(**shape)
    for _ in range(n):
        fa(**call)


def test_replays_add_what_their_capture_avoided(ref, capturing):
    fa = interceptor.wrap(ref.flash_attn_with_kvcache, ref.build())
    capturing(0)
    _layers(fa, 3)  # eager warm-up: not a graph's
    capturing(41)
    runtime.new_step()
    _layers(fa, 4)  # one shape: 1 computed, 4 injected
    _layers(fa, 2, b=3)  # a second shape: 1 computed, 2 injected
    small, other = SimpleNamespace(), SimpleNamespace()
    activation.PROCESS.graphs.captured(small, 41)
    capturing(42)
    runtime.new_step()
    _layers(fa, 5)
    activation.PROCESS.graphs.captured(other, 42)
    for _ in range(7):
        graphs.replayed(small)
    graphs.replayed(other)
    assert activation.PROCESS.graphs.totals() == {"graphs": 2, "replays": 8, "launches_avoided": 7 * 4 + 4}
    s = stats.snapshot()
    assert s["graph_replays"]["launches_avoided"] == 32 and s["intercepted"]["launches_avoided"] == 2 + 4 + 4
    assert s["launches_avoided"] == 32 + 10
    assert "32 in 8 CUDA-graph replays (2 graphs captured)" in stats.summary_line()


def test_a_graph_that_avoided_nothing_is_not_counted(ref, capturing):
    fa = interceptor.wrap(ref.flash_attn_with_kvcache, ref.build())
    capturing(7)
    _layers(fa, 1)  # one layer: computed 1, injected 1, nothing avoided
    graph = SimpleNamespace()
    activation.PROCESS.graphs.captured(graph, 7)
    graphs.replayed(graph)
    graphs.replayed(SimpleNamespace())  # a graph captured without the plugin
    assert activation.PROCESS.graphs.totals() == {"graphs": 0, "replays": 0, "launches_avoided": 0}


def test_install_wraps_cudagraph_capture_end_and_replay_reversibly(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda.CUDAGraph, "capture_end", lambda self: calls.append("capture_end"))
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda self: calls.append("replay"))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: SimpleNamespace(cuda_stream=5))
    monkeypatch.setattr(context, "capture_id", lambda stream: 99 if stream == 5 else 0)
    original = torch.cuda.CUDAGraph.replay
    activation.PROCESS.graphs.install()
    activation.PROCESS.graphs.install()  # idempotent
    try:
        activation.PROCESS.graphs.book(99, 6)
        graph = SimpleNamespace()
        torch.cuda.CUDAGraph.capture_end(graph)
        torch.cuda.CUDAGraph.replay(graph)
        torch.cuda.CUDAGraph.replay(graph)
    finally:
        activation.PROCESS.graphs.uninstall()
    assert torch.cuda.CUDAGraph.replay is original
    assert calls == ["capture_end", "replay", "replay"]
    assert activation.PROCESS.graphs.totals() == {"graphs": 1, "replays": 2, "launches_avoided": 12}


def test_periodic_summary_fires_from_replays(ref, capturing, caplog, monkeypatch):
    from attn_sched_plugin import switches

    switches.reload(env={"ATTN_SCHED_SUMMARY_INTERVAL": "0.000001"})
    graph = SimpleNamespace()
    activation.PROCESS.graphs.book(3, 2)
    activation.PROCESS.graphs.captured(graph, 3)
    with caplog.at_level("INFO", logger="attn_sched_plugin"):
        for _ in range(graphs.SUMMARY_EVERY - 1):
            graphs.replayed(graph)
        assert not any("CUDA-graph replays" in r.getMessage() for r in caplog.records)  # not checked per replay
        graphs.replayed(graph)
    assert any("CUDA-graph replays" in r.getMessage() for r in caplog.records)


def _held() -> list:
    """The metadata tensors the open step holds."""
    return [metadata for metadata, _ in runtime.state().entries.values()]


def _in(buffer: torch.Tensor, t: torch.Tensor) -> bool:
    return t.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()


def test_a_captured_steps_metadata_lives_in_its_captures_arena(ref, capturing, tally):
    """Each shape's metadata is copied into a 128-byte aligned slot of the capture's arena, outside the graph's
    pool (docs/graph-memory-layout.md); the reference FA3, as strict as FA3, reads it there."""
    fa = interceptor.wrap(ref.flash_attn_with_kvcache, ref.build())
    buffer = torch.full((arena.INTS,), -1, dtype=torch.int32)
    activation.PROCESS.graphs.opened(41, arena.Arena(buffer))
    capturing(41)
    runtime.new_step()
    _layers(fa, 3)
    _layers(fa, 2, b=3)
    assert (tally().computed, tally().injected, dict(tally().passthrough)) == (2, 5, {})
    held = _held()
    assert all(_in(buffer, t) for t in held) and sorted(t.storage_offset() for t in held) == [0, arena.ALIGN]
    graph = SimpleNamespace()
    activation.PROCESS.graphs.captured(graph, 41)
    assert graph._attn_sched_arena.buffer is buffer  # replays write there: it lives as long as the graph


def test_without_room_in_an_arena_the_metadata_stays_where_it_was_computed(ref, capturing, tally, caplog):
    fa = interceptor.wrap(ref.flash_attn_with_kvcache, ref.build())
    small = torch.empty(1, dtype=torch.int32)  # smaller than one metadata tensor
    activation.PROCESS.graphs.opened(42, arena.Arena(small))
    capturing(42)
    runtime.new_step()
    with caplog.at_level("WARNING", logger="attn_sched_plugin"):
        _layers(fa, 2)
    assert not any(_in(small, t) for t in _held()) and (tally().injected, dict(tally().passthrough)) == (2, {})
    assert sum("exceeds its arena" in r.getMessage() for r in caplog.records) == 1
    unused = SimpleNamespace()
    activation.PROCESS.graphs.captured(unused, 42)
    assert not hasattr(unused, "_attn_sched_arena")  # nothing written there: not kept
    capturing(43)  # a capture begun before install: no arena at all
    runtime.new_step()
    _layers(fa, 2)
    assert (tally().injected, dict(tally().passthrough)) == (2, {})


def test_a_graph_that_cannot_hold_its_arena_does_not_lose_it(capturing):
    kept = arena.Arena(torch.zeros(arena.INTS, dtype=torch.int32))
    activation.PROCESS.graphs.opened(44, kept)
    activation.PROCESS.graphs.keep(44, torch.tensor([1, 2], dtype=torch.int32))
    activation.PROCESS.graphs.captured(object(), 44)  # no attributes
    assert activation.PROCESS.graphs._unowned == [kept]
    written = arena.Arena(torch.zeros(arena.INTS, dtype=torch.int32))
    activation.PROCESS.graphs.opened(45, written)
    activation.PROCESS.graphs.keep(45, torch.tensor([1, 2], dtype=torch.int32))
    for capture_id in range(46, 46 + graphs.MAX_PENDING):  # captures that never end push 45 out
        activation.PROCESS.graphs.opened(capture_id, arena.Arena(torch.zeros(1, dtype=torch.int32)))
    assert activation.PROCESS.graphs._unowned == [kept, written]  # written to: kept, not freed


def test_install_allocates_each_captures_arena_before_it_begins(monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(torch.cuda.CUDAGraph, "capture_begin", lambda self, *a, **k: calls.append("capture_begin"))
    monkeypatch.setattr(torch.cuda.CUDAGraph, "capture_end", lambda self: calls.append("capture_end"))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: SimpleNamespace(cuda_stream=5))
    monkeypatch.setattr(context, "capture_id", lambda stream: 99)

    def allocate(cls):
        calls.append("allocate")
        return cls(torch.zeros(arena.INTS, dtype=torch.int32))

    monkeypatch.setattr(arena.Arena, "allocate", classmethod(allocate))
    original = torch.cuda.CUDAGraph.capture_begin
    activation.PROCESS.graphs.install()
    try:
        graph = SimpleNamespace()
        torch.cuda.CUDAGraph.capture_begin(graph, pool=(0, 1))
        kept = activation.PROCESS.graphs.keep(99, torch.tensor([7, 8], dtype=torch.int32))
        torch.cuda.CUDAGraph.capture_end(graph)
        monkeypatch.setattr(arena.Arena, "allocate", classmethod(lambda cls: 1 / 0))
        with caplog.at_level("WARNING", logger="attn_sched_plugin"):
            torch.cuda.CUDAGraph.capture_begin(SimpleNamespace())  # the capture begins all the same
        metadata = torch.tensor([3], dtype=torch.int32)
        assert activation.PROCESS.graphs.keep(99, metadata) is metadata
    finally:
        activation.PROCESS.graphs.uninstall()
    assert torch.cuda.CUDAGraph.capture_begin is original
    assert calls == ["allocate", "capture_begin", "capture_end", "capture_begin"]
    assert kept.tolist() == [7, 8] and graph._attn_sched_arena.buffer[:2].tolist() == [7, 8]
    assert any("allocating a capture's arena failed (ZeroDivisionError" in r.getMessage() for r in caplog.records)
