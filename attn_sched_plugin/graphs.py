"""CUDA-graph replays: the prepare launches each captured graph avoids, counted at every replay.

Almost all of the plugin's work happens in graph replays, which never enter Python's FA3 wrapper.
While a graph is captured, the interceptor books, per CUDA capture id, the prepare launches the
capture avoided (each injected call skips one, each computed metadata adds one). ``install()``
wraps ``torch.cuda.CUDAGraph.capture_end``, which moves that count onto the graph object, and
``replay``, which adds it to the totals: one attribute read and an addition per replay, nothing
per layer. The capture id identifies a graph exactly, also when one graph holds the layers of
several engine backends (speculative draft steps), which engine callbacks cannot attribute.
"""

from __future__ import annotations

import threading
from collections import Counter

import torch

from . import context

_ATTR = "_attn_sched_avoided"
_lock = threading.Lock()
_pending: Counter = Counter()  # capture id -> launches avoided so far in that capture
_totals = Counter()  # "graphs": captured with an avoided count, "replays", "launches_avoided"
_originals: dict[str, object] = {}
# called after each counted replay; ``stats`` sets it to its periodic summary check
on_replay = None


def book(capture_id: int, avoided: int) -> None:
    """The interceptor's record of one captured call (+1 injected, -1 computed)."""
    with _lock:
        _pending[capture_id] += avoided


def captured(graph, capture_id: int) -> None:
    """``graph``'s capture (``capture_id``) ended: it avoids what its capture booked, at every replay."""
    with _lock:
        avoided = _pending.pop(capture_id, 0)
        if avoided:
            _totals["graphs"] += 1
    if avoided:
        setattr(graph, _ATTR, avoided)


def replayed(graph) -> None:
    avoided = getattr(graph, _ATTR, 0)
    if avoided:
        with _lock:
            _totals["replays"] += 1
            _totals["launches_avoided"] += avoided
        if on_replay is not None:
            on_replay()


def totals() -> dict[str, int]:
    with _lock:
        return {name: _totals[name] for name in ("graphs", "replays", "launches_avoided")}


def reset() -> None:
    with _lock:
        _pending.clear()
        _totals.clear()


def install() -> None:
    """Wrap ``CUDAGraph.capture_end`` and ``replay`` (idempotent; ``uninstall`` restores them)."""
    graph_cls = torch.cuda.CUDAGraph
    with _lock:
        if _originals:
            return
        _originals.update(capture_end=graph_cls.capture_end, replay=graph_cls.replay)
    capture_end, replay = _originals["capture_end"], _originals["replay"]

    def capture_end_counted(self, *args, **kwargs):
        stream = torch.cuda.current_stream().cuda_stream
        capture_id = context.capture_id(stream)  # read while the stream is still capturing
        result = capture_end(self, *args, **kwargs)
        if capture_id != context.UNKNOWN_CAPTURE:
            captured(self, capture_id)
        return result

    def replay_counted(self, *args, **kwargs):
        replayed(self)
        return replay(self, *args, **kwargs)

    graph_cls.capture_end = capture_end_counted
    graph_cls.replay = replay_counted


def uninstall() -> None:
    with _lock:
        originals = dict(_originals)
        _originals.clear()
    for name, original in originals.items():
        setattr(torch.cuda.CUDAGraph, name, original)
