"""``PatchSet``: the one way the plugin changes other code's attributes, and takes the change back.

Each ``set`` remembers what was there (or that nothing was); ``undo`` restores in reverse order,
and only where the attribute is still ours: what another library installed over us after we did
stays (theirs to undo), logged once. Inside ``with patches:`` any exception undoes
the whole set before it propagates, so a failed install leaves its target as it was.
"""

from __future__ import annotations

from typing import Callable

from . import once

_MISSING = object()


class PatchSet:
    __slots__ = ("_undo",)

    def __init__(self):
        # (owner, name, what was there or _MISSING, ours) per attribute; a callable per other step
        self._undo: list = []

    def __bool__(self) -> bool:
        return bool(self._undo)

    def __enter__(self) -> PatchSet:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if exc is not None:
            self.undo()

    def set(self, owner, name: str, value) -> None:
        """``owner.name = value``, undone by ``undo`` (an attribute ``owner`` only inherited is deleted)."""
        previous = vars(owner).get(name, _MISSING)
        setattr(owner, name, value)
        self._undo.append((owner, name, previous, value))

    def changed_by(self, owner, name: str, change: Callable[[], object]) -> None:
        """Run ``change``, other code that sets ``owner.name`` itself (an engine's own registry), and record
        what it set as ``set`` does: undone the same way, even when ``change`` raises after setting."""
        previous = vars(owner).get(name, _MISSING)
        try:
            change()
        finally:
            current = vars(owner).get(name, _MISSING)
            if current is not previous:
                self._undo.append((owner, name, previous, current))

    def on_undo(self, step: Callable[[], object]) -> None:
        """A change made otherwise (an engine's own registry): ``step`` takes it back, in order with the rest."""
        self._undo.append(step)

    def undo(self) -> list[str]:
        """Take back every change, the last first; returns ``owner.name`` of each left in place (not ours now)."""
        left = []
        while self._undo:
            entry = self._undo.pop()
            if callable(entry):
                entry()
                continue
            owner, name, previous, ours = entry
            if vars(owner).get(name, _MISSING) is not ours:
                left.append(f"{getattr(owner, '__qualname__', getattr(owner, '__name__', owner))}.{name}")
                once.warn(f"{left[-1]} was wrapped again after us; left in place")
            elif previous is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, previous)
        return left
