"""``Hooks``: the process's pluggy PluginManager (hookspecs, observers, discovered adapters), each hook called guarded."""

from __future__ import annotations

import logging
import threading
from importlib.metadata import entry_points

import pluggy

from . import hookspecs, once

log = logging.getLogger("attn_sched_plugin")


class Hooks:
    def __init__(self):
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs.AdapterSpec)
        self.manager.add_hookspecs(hookspecs.ObserverSpec)
        self._lock = threading.Lock()
        self._adapters_loaded = False

    def load_adapters(self) -> pluggy.PluginManager:
        """Load every adapter advertised in the ``attn_sched_plugin.adapters`` entry-point group, once.

        A third-party adapter that fails to load is logged and skipped; it never stops the others.
        """
        pm = self.manager
        with self._lock:
            if not self._adapters_loaded:
                self._adapters_loaded = True
                for ep in entry_points(group=hookspecs.ADAPTER_GROUP):
                    if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                        continue
                    try:
                        pm.register(ep.load(), name=ep.name)
                    except Exception as exc:  # a broken third-party adapter must not break serving
                        log.warning("attn-sched: adapter entry point %r failed to load: %s", ep.name, exc)
        return pm

    def each(self, hook: str, **kwargs):
        """(plugin name, result) of every implementation of ``hook`` that returned something, in pluggy's order.

        pluggy's own call stops at the first implementation that raises and raises into its caller,
        which is the engine; here each one runs guarded: one that raises is logged once, naming its
        plugin, and skipped, and the others still run.
        """
        for impl in reversed(getattr(self.manager.hook, hook).get_hookimpls()):
            try:
                result = impl.function(*(kwargs[name] for name in impl.argnames))
            except Exception as exc:
                failed(hook, impl.plugin_name, exc)
                continue
            if result is not None:
                yield impl.plugin_name, result

    def notify(self, hook: str, **kwargs) -> None:
        """Call every observer of ``hook`` (guarded, as ``each``)."""
        for _ in self.each(hook, **kwargs):
            pass


def failed(hook: str, plugin: str, exc: BaseException) -> None:
    once.warn(f"plugin {plugin!r} failed in {hook} ({type(exc).__name__}: {exc}); skipped")
