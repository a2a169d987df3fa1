"""``instrument(engine)`` / ``uninstrument(engine)``: the adapter for an engine, once per process.

``PROCESS`` holds all the process's state (``process.Process``); its summary is logged at exit.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading

from . import context, switches
from .process import Process
from .records import AdapterReport

log = logging.getLogger("attn_sched_plugin")

_lock = threading.Lock()
PROCESS = Process()


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
        process = PROCESS
        if engine in process.installed:
            return process.installed[engine]
        _ensure_visible()
        if switches.current().disabled:
            log.info("attn-sched: disabled by ATTN_SCHED_DISABLE; %s left untouched", engine)
            process.installed[engine] = None
            return None
        process.hooks.load_adapters()
        # the install hook is firstresult, but pluggy's own call would stop at the first adapter that
        # raises (the last registered: a third party's before ours): each runs guarded, by name
        report = next((r for _, r in process.hooks.each("attn_sched_install", engine=engine)), None)
        if report is None:
            log.info("attn-sched: no adapter installed for engine %r; nothing patched", engine)
        else:
            log.info("%s", report.one_line())
            if report.active:
                process.graphs.install()  # replays of the graphs the adapter's captures record are counted
                context.capture_ids_readable()  # when not: one line now, not silence after "active"
        process.installed[engine] = report
        return report


def uninstrument(engine: str) -> None:
    """Undo ``instrument(engine)``; the engine runs exactly as without the plugin afterwards."""
    with _lock:
        process = PROCESS
        if process.installed.pop(engine, None) is not None:
            process.hooks.notify("attn_sched_uninstall", engine=engine)
        if not any(report is not None and report.active for report in process.installed.values()):
            process.graphs.uninstall()


def installed() -> dict[str, AdapterReport | None]:
    """What ``instrument`` did in this process, by engine."""
    return dict(PROCESS.installed)


@atexit.register
def _at_exit() -> None:
    PROCESS.observer.at_exit()
