"""The pluggy hook specifications: how adapters (engines) and observers plug into the core.

Adapters are discovered through the entry-point group ``attn_sched_plugin.adapters``; each entry
point names a module or object holding ``@hookimpl`` functions. Observers register on the same
plugin manager (``activation.PROCESS.hooks.manager``). The core calls every implementation
guarded (``hooks.Hooks.each``): one that raises is logged once, naming its plugin, and skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import pluggy

PROJECT = "attn_sched"
ADAPTER_GROUP = "attn_sched_plugin.adapters"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class AdapterSpec:
    @hookspec
    def attn_sched_discover(self):
        """Return a list of ``EngineSupport`` for the engines this plugin serves.

        Must be cheap and must not import the engine (the doctor calls it everywhere).
        """

    @hookspec(firstresult=True)
    def attn_sched_install(self, engine):
        """Patch ``engine`` (e.g. "sglang") in this process and return an ``AdapterReport``.

        Return None when this plugin does not serve ``engine``. Must be idempotent, must not
        initialise CUDA, and must leave the engine untouched when it declines.
        """

    @hookspec
    def attn_sched_uninstall(self, engine):
        """Undo every patch made for ``engine`` by ``attn_sched_install``."""

    @hookspec
    def attn_sched_engine_counters(self):
        """Return ``{engine: {counter: count}}`` this adapter keeps about its engine (e.g. vLLM calls
        whose own metadata was computed for other parameters); folded into ``stats.snapshot()``."""


class ObserverSpec:
    @hookspec
    def attn_sched_metadata_computed(self, event):
        """A metadata tensor was computed (a ``ComputedEvent``): once per key per step."""

    @hookspec
    def attn_sched_step_end(self, tally):
        """A step ended (a ``StepTally``): per-step counters, folded here to keep the hot path free of hooks."""


@dataclass(frozen=True)
class ComputedEvent:
    """A metadata tensor was computed (the ``attn_sched_metadata_computed`` payload)."""

    provider: str
    step: int
    context: tuple
    signature: tuple
    batch_size: int
    max_seqlen_q: int
    max_seqlen_k: int
    page_size: int | None
    numel: int
