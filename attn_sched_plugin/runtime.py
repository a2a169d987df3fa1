"""The public step API: ``state()`` (this thread's step) and ``new_step()``, over ``activation.PROCESS.steps``.

Adapters call ``new_step()`` at every engine metadata-init; ``state()`` is on the per-call path,
so it is one thread-local read (``steps.Steps`` holds the state).
"""

from __future__ import annotations

from . import activation
from .cache import StepCache


def state() -> StepCache:
    """This thread's current step."""
    steps = activation.PROCESS.steps
    cache = getattr(steps.local, "cache", None)
    return steps.start() if cache is None else cache


def new_step() -> None:
    """End this thread's step (its metadata is dropped) and start a new one.

    Call it wherever the engine (re)builds its attention metadata, including before a CUDA-graph
    capture and its warm-up runs; custom engines call it once per forward step.
    """
    activation.PROCESS.steps.start()
