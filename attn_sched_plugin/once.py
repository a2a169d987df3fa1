"""Failures of ours (or of a third party's hook) are logged once each, and the set of them is bounded.

A message that varies per call (a tensor's address, a batch size) must not grow memory without
end: past ``MAX_MESSAGES`` distinct messages one line says so, and later ones are not logged
(the statistics still count every pass-through). The set is the logger's, as process-wide as the
``logging`` module itself, so it lives here rather than in ``process.Process``; ``reset`` is for tests.
"""

from __future__ import annotations

import logging

log = logging.getLogger("attn_sched_plugin")

MAX_MESSAGES = 256
_seen: set[str] = set()


def warn(message: str) -> None:
    """Log ``attn-sched: message`` at WARNING the first time it is seen."""
    _once(logging.WARNING, message)


def error(message: str) -> None:
    """Log ``attn-sched: message`` at ERROR the first time it is seen (a verified output differed)."""
    _once(logging.ERROR, message)


def _once(level: int, message: str) -> None:
    if message in _seen:
        return
    if len(_seen) >= MAX_MESSAGES:
        if "" not in _seen:  # the overflow line, once
            _seen.add("")
            log.warning("attn-sched: more than %d distinct failures logged; further ones are counted, not logged",
                        MAX_MESSAGES)
        return
    _seen.add(message)
    log.log(level, "attn-sched: %s", message)


def reset() -> None:
    _seen.clear()
