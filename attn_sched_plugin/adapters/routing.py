"""An engine module's FA3 entry, pointed at the plugin's wrapper only while CUDA graphs are captured.

Why only then: inside a capture the wrapper records one metadata kernel per shape and step, and
every replay runs it with no host work at all. In an eager step the prepare launch FA3 would skip
saves less host time than any Python wrapper costs (measured: benchmarks/results/host-overhead*),
so eager steps must call FA3 exactly as without the plugin. Rebinding the module global at the
engine's capture / non-capture metadata callbacks (a few times per process) gives exactly that:
between captures the engine's own code calls the original function object, with zero added cost.

Under ``ATTN_SCHED_VERIFY=1`` eager steps go through the wrapper too (``eager()``), each one a new
step: every eager FA3 call the wrapper can serve is run with shared metadata and again without,
and compared bitwise (FA3's own result is returned). That is what verify mode can check while
serving; calls inside captures are recorded, not compared (nothing has run yet), and replays
never enter Python.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import Callable

from .. import runtime, switches


class EntryRoute:
    """``module.attr`` (the FA3 entry an engine module calls) switched between plain and wrapped.

    ``outside``: what calls reach outside captures instead of the plain function
    (``ATTN_SCHED_GUARD=always``: the guard's entry, which touches only calls carrying engine
    metadata); ``restore`` puts the plain function back whatever the phase (uninstall).
    """

    def __init__(self, module: ModuleType, attr: str, wrapped: Callable, outside: Callable | None = None):
        self.module, self.attr = module, attr
        self.plain = getattr(module, attr)
        self.wrapped = wrapped
        self.outside = self.plain if outside is None else outside
        self.verify = switches.current().verify  # read once, not per step
        self._lock = threading.Lock()

    @property
    def capturing(self) -> bool:
        return self.module.__dict__.get(self.attr) is self.wrapped

    def capture(self) -> None:
        """Calls from now on share metadata (a capture starts)."""
        current = self.module.__dict__.get(self.attr)
        if current is self.plain or current is self.outside:
            with self._lock:
                setattr(self.module, self.attr, self.wrapped)

    def eager(self) -> None:
        """An eager (or replay) step starts: FA3 untouched, or under ATTN_SCHED_VERIFY the verifying wrapper."""
        if self.verify:
            runtime.new_step()
            self.capture()
        else:
            self.release()

    def release(self) -> None:
        """Calls from now on reach FA3 untouched, or only the guard (an eager or replay step starts, the
        engine's guard against shared metadata).

        Two identity checks when there is nothing to do; anything but our wrapper there (FA3 itself, or
        what someone put after us) stays.
        """
        current = self.module.__dict__.get(self.attr)
        if current is not self.outside and (current is self.wrapped or current is self.plain):
            with self._lock:
                setattr(self.module, self.attr, self.outside)

    def restore(self) -> None:
        """The plain function, whatever the phase (uninstall); what someone put after us stays."""
        current = self.module.__dict__.get(self.attr)
        if current is self.wrapped or current is self.outside:
            with self._lock:
                setattr(self.module, self.attr, self.plain)
