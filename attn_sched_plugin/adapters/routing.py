"""An engine module's FA3 entry, pointed at the plugin's wrapper only while CUDA graphs are captured.

Why only then: inside a capture the wrapper records one metadata kernel per shape and step, and
every replay runs it with no host work at all. In an eager step the prepare launch FA3 would skip
saves less host time than any Python wrapper costs (measured: benchmarks/results/host-overhead*),
so eager steps must call FA3 exactly as without the plugin. Rebinding the module global at the
engine's capture / non-capture metadata callbacks (a few times per process) gives exactly that:
between captures the engine's own code calls the original function object, with zero added cost.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Callable


class EntryRoute:
    """``module.attr`` (the FA3 entry an engine module calls) switched between plain and wrapped.

    ``eager``: what eager steps call instead of the plain function (``ATTN_SCHED_GUARD=always``:
    the guard's entry, which touches only calls carrying engine metadata); ``restore`` puts the
    plain function back whatever the phase (uninstall).
    """

    def __init__(self, module: ModuleType, attr: str, wrapped: Callable, eager: Callable | None = None):
        self.module, self.attr = module, attr
        self.plain = getattr(module, attr)
        self.wrapped = wrapped
        self.eager = self.plain if eager is None else eager
        self._lock = threading.Lock()

    @property
    def capturing(self) -> bool:
        return self.module.__dict__.get(self.attr) is self.wrapped

    def capture(self) -> None:
        """Calls from now on share metadata (a capture starts)."""
        self._point(self.wrapped)

    def release(self) -> None:
        """Calls from now on reach FA3 untouched, or only the guard (an eager or replay step starts)."""
        self._point(self.eager)

    def restore(self) -> None:
        """The plain function, whatever the phase (uninstall)."""
        self._point(self.plain)

    def _point(self, target: Callable) -> None:
        current = self.module.__dict__.get(self.attr)
        if current is not target and (current is self.plain or current is self.wrapped or current is self.eager):
            with self._lock:  # anything else there was put by someone after us: theirs to keep
                setattr(self.module, self.attr, target)
