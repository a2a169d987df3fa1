"""``instrument(engine)`` / ``uninstrument(engine)``: the adapter for an engine, once per process."""

from __future__ import annotations

import logging
import sys
import threading

from . import context, graphs, plugins, switches
from .report import AdapterReport

log = logging.getLogger("attn_sched_plugin")

_lock = threading.Lock()
_installed: dict[str, AdapterReport | None] = {}


def _ensure_visible() -> None:
    """Our one activation line must show even where the engine configured no root handler."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)


def instrument(engine: str) -> AdapterReport | None:
    """Install the adapter for ``engine`` in this process (idempotent); log one line either way."""
    with _lock:
        if engine in _installed:
            return _installed[engine]
        _ensure_visible()
        if switches.current().disabled:
            log.info("attn-sched: disabled by ATTN_SCHED_DISABLE; %s left untouched", engine)
            _installed[engine] = None
            return None
        plugins.load_adapters()
        # the install hook is firstresult, but pluggy's own call would stop at the first adapter that
        # raises (the last registered: a third party's before ours): each runs guarded, by name
        report = next((r for _, r in plugins.each("attn_sched_install", engine=engine)), None)
        if report is None:
            log.info("attn-sched: no adapter installed for engine %r; nothing patched", engine)
        else:
            log.info("%s", report.one_line())
            if report.active:
                graphs.install()  # replays of the graphs the adapter's captures record are counted
                context.capture_ids_readable()  # when not: one line now, not silence after "active"
        _installed[engine] = report
        return report


def uninstrument(engine: str) -> None:
    """Undo ``instrument(engine)``; the engine runs exactly as without the plugin afterwards."""
    with _lock:
        if _installed.pop(engine, None) is not None:
            plugins.notify("attn_sched_uninstall", engine=engine)
        if not any(report is not None and report.active for report in _installed.values()):
            graphs.uninstall()


def installed() -> dict[str, AdapterReport | None]:
    """What ``instrument`` did in this process, by engine."""
    return dict(_installed)
