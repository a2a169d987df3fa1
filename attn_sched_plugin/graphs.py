"""CUDA-graph captures and replays: each graph's arena, and the prepare launches it avoids, counted at every replay.

Almost all of the plugin's work happens in graph replays, which never enter Python's FA3 wrapper.
While a graph is captured, the interceptor books, per CUDA capture id, the prepare launches the
capture avoided (each injected call skips one, each computed metadata adds one). ``GraphCounts.install()``
wraps ``torch.cuda.CUDAGraph.capture_begin``, which first allocates the capture's ``Arena`` (outside the
graph's pool: ``arena.py``), ``capture_end``, which moves that count and the arena onto the graph object,
and ``replay`` (one ``patching.PatchSet``). The capture id identifies a graph exactly, also when one graph
holds the layers of several engine backends (speculative draft steps), which engine callbacks cannot attribute.

A replay must cost nothing measurable (issue 21: host-bound servers show every microsecond), so
it only adds one to its graph's own count: no lock, no call, no clock. The totals are summed from
the graphs' counts when read (``GraphCounts.totals()``), and a collected graph's count is kept in the retired
totals. One graph is replayed by one thread at a time, so the unlocked addition is exact. The
periodic summary is checked once every ``SUMMARY_EVERY`` replays of a graph, not per replay.
Nothing here raises into the engine: the real ``capture_begin``, ``capture_end`` and ``replay`` always run.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from typing import Callable

import torch

from . import context, once
from .arena import Arena
from .patching import PatchSet

_ATTR = "_attn_sched_count"
_ARENA = "_attn_sched_arena"  # the graph's replays write its metadata there: it lives as long as the graph
SUMMARY_EVERY = 256
MAX_PENDING = 64  # captures booked or given an arena but not ended (a capture that failed midway never ends)
_FIELDS = ("graphs", "replays", "launches_avoided")


class _Count:
    """One captured graph: the launches each replay avoids, its replays so far, and whose count it is."""

    __slots__ = ("avoided", "replays", "owner", "__weakref__")

    def __init__(self, avoided: int, owner: GraphCounts):
        self.avoided, self.replays, self.owner = avoided, 0, owner


def _add(totals: Counter, count: _Count) -> None:
    totals["graphs"] += 1
    totals["replays"] += count.replays
    totals["launches_avoided"] += count.replays * count.avoided


def _counting(replay):
    """``replay`` that first adds one to the graph's count: an attribute read and an addition (no
    ``**kwargs``: ``CUDAGraph.replay`` takes none, and packing them alone costs ~300 ns per replay)."""

    def replay_counted(self, *args):
        count = getattr(self, _ATTR, None)
        if count is not None:
            count.replays += 1
            if not count.replays % SUMMARY_EVERY:
                count.owner.check_summary()
        return replay(self, *args)

    return replay_counted


# one replay of ``graph`` counted, without running it (what ``install`` adds to ``CUDAGraph.replay``)
replayed = _counting(lambda graph: None)


class _Capture:
    """A capture begun or booked and not yet ended: the prepare launches it avoided so far, and its arena."""

    __slots__ = ("avoided", "arena")

    def __init__(self):
        self.avoided, self.arena = 0, None


class GraphCounts:
    """The captured graphs of this process: captures booked, graphs counted, and the CUDAGraph wrappers."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: dict[int, _Capture] = {}  # capture id -> what that capture holds, until it ends
        self._unowned: list[Arena] = []  # arenas of graphs that cannot hold one: kept for the process's life
        self._live: set = set()  # the _Count of each counted graph still alive
        self._retired = Counter()  # _FIELDS of counted graphs since collected
        self._patches = PatchSet()
        # called every SUMMARY_EVERY replays of a counted graph (the observer's periodic summary check)
        self.on_replay: Callable[[], None] | None = None

    def _capture(self, capture_id: int) -> _Capture:
        """Capture ``capture_id``'s record, made if new (under ``_lock``). Beyond ``MAX_PENDING`` the oldest goes:
        its capture never ended; an arena it wrote to is kept, as that capture may yet end into a graph."""
        capture = self._pending.get(capture_id)
        if capture is None:
            if len(self._pending) >= MAX_PENDING:
                oldest = self._pending.pop(next(iter(self._pending)))
                if oldest.arena is not None and oldest.arena.used:
                    self._unowned.append(oldest.arena)
            capture = self._pending[capture_id] = _Capture()
        return capture

    def book(self, capture_id: int, avoided: int) -> None:
        """The interceptor's record of one captured call (+1 injected, -1 computed)."""
        with self._lock:
            self._capture(capture_id).avoided += avoided

    def opened(self, capture_id: int, arena: Arena) -> None:
        """Capture ``capture_id`` began with ``arena`` allocated for it."""
        if capture_id in (context.NOT_CAPTURING, context.UNKNOWN_CAPTURE):
            return
        with self._lock:
            self._capture(capture_id).arena = arena

    def keep(self, capture_id: int, metadata: torch.Tensor) -> torch.Tensor:
        """``metadata`` computed in capture ``capture_id``, moved into that capture's arena; itself where the
        capture has no arena (begun before ``install``) or the arena is full (logged once)."""
        with self._lock:
            capture = self._pending.get(capture_id)
        arena = None if capture is None else capture.arena
        kept = None if arena is None else arena.keep(metadata)
        if kept is None:
            if arena is not None:
                once.warn(f"a captured step's metadata exceeds its arena ({arena.buffer.numel()} ints); it stays "
                          "in the graph's memory pool, where it moves later allocations (docs/graph-memory-layout.md)")
            return metadata
        return kept

    def captured(self, graph, capture_id: int) -> None:
        """``graph``'s capture (``capture_id``) ended: it keeps its arena if it wrote there, and avoids what its
        capture booked, at every replay."""
        with self._lock:
            capture = self._pending.pop(capture_id, None) or _Capture()
        avoided, arena = capture.avoided, capture.arena
        if arena is not None and arena.used:
            try:
                setattr(graph, _ARENA, arena)
            except (AttributeError, TypeError):  # a graph without attributes: its replays still write there
                with self._lock:
                    self._unowned.append(arena)
        if not avoided:
            return
        count = _Count(avoided, self)
        setattr(graph, _ATTR, count)
        with self._lock:
            self._live.add(count)
        try:
            weakref.finalize(graph, self._retire, count)
        except TypeError:  # not weak-referenceable: its count stays live
            pass

    def _retire(self, count: _Count) -> None:
        with self._lock:
            self._live.discard(count)
            _add(self._retired, count)

    def check_summary(self) -> None:
        if self.on_replay is not None:
            try:
                self.on_replay()
            except Exception as exc:  # never into the engine's replay
                once.warn(f"the summary check at a graph replay failed ({type(exc).__name__}: {exc})")

    def totals(self) -> dict[str, int]:
        with self._lock:
            totals, live = Counter(self._retired), list(self._live)
        for count in live:
            _add(totals, count)
        return {name: totals[name] for name in _FIELDS}

    def install(self) -> None:
        """Wrap ``CUDAGraph.capture_begin``, ``capture_end`` and ``replay`` (idempotent; ``uninstall`` restores them)."""
        graph_cls = torch.cuda.CUDAGraph
        with self._lock:
            if self._patches:
                return
            capture_begin, capture_end, replay = graph_cls.capture_begin, graph_cls.capture_end, graph_cls.replay
            opened, captured = self.opened, self.captured

            def capture_begin_with_arena(self, *args, **kwargs):
                try:
                    arena = Arena.allocate()  # before the capture begins: not from the graph's pool
                except Exception as exc:
                    once.warn(f"allocating a capture's arena failed ({type(exc).__name__}: {exc})")
                    arena = None
                result = capture_begin(self, *args, **kwargs)
                if arena is not None:
                    try:
                        opened(context.capture_id(torch.cuda.current_stream().cuda_stream), arena)
                    except Exception as exc:
                        once.warn(f"reading the capture id at capture_begin failed ({type(exc).__name__}: {exc})")
                return result

            def capture_end_counted(self, *args, **kwargs):
                try:
                    capture_id = context.capture_id(torch.cuda.current_stream().cuda_stream)  # while still capturing
                except Exception as exc:
                    once.warn(f"reading the capture id at capture_end failed ({type(exc).__name__}: {exc})")
                    capture_id = context.UNKNOWN_CAPTURE
                result = capture_end(self, *args, **kwargs)
                if capture_id != context.UNKNOWN_CAPTURE:
                    try:
                        captured(self, capture_id)
                    except Exception as exc:
                        once.warn(f"counting a captured graph failed ({type(exc).__name__}: {exc})")
                return result

            with self._patches:
                self._patches.set(graph_cls, "capture_begin", capture_begin_with_arena)
                self._patches.set(graph_cls, "capture_end", capture_end_counted)
                self._patches.set(graph_cls, "replay", _counting(replay))

    def uninstall(self) -> None:
        """Restore what is still ours; a wrapper another library put over ours stays (theirs to undo)."""
        with self._lock:
            self._patches.undo()
