"""Environment switches, parsed in one place so a bad value gets one clear message.

A bad value of a switch falls back to its default, except the kill switch: an unreadable
``ATTN_SCHED_DISABLE`` (``2``, ``disable``, ``y``, ``enabled``) turns the plugin off, because a switch
meant to turn us off must fail closed.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Mapping

log = logging.getLogger("attn_sched_plugin")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


class SwitchError(ValueError):
    """An environment variable holds a value we do not accept."""


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SwitchError(f"{name}={raw!r} is not readable; accepted values: 1/true/yes/on or 0/false/no/off (or unset)")


def _choice(env: Mapping[str, str], name: str, accepted: tuple[str, ...]) -> str:
    raw = env.get(name, "")
    value = raw.strip().lower() or accepted[0]
    if value not in accepted:
        raise SwitchError(f"{name}={raw!r} is not valid; accepted values: {', '.join(accepted)}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):  # "nan" / "inf" parse as floats but are no interval
        raise SwitchError(
            f"{name}={raw!r} is not valid; accepted values: a finite number of seconds >= 0 (0 = only at exit)"
        )
    return value


class Switches:
    """The switches in force. ``errors`` lists the invalid ones, each with what was used instead."""

    SGLANG_MODES = ("replace", "keep-native")
    # engine-supplied metadata checked in CUDA-graph captures (default), also in eager steps, or never
    GUARD_MODES = ("capture", "always", "off")

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self.errors: list[str] = []
        self.disabled = self._read(_flag, env, "ATTN_SCHED_DISABLE", default=False,
                                   invalid=(True, "the plugin is therefore off (the kill switch fails closed)"))
        self.verify = self._read(_flag, env, "ATTN_SCHED_VERIFY", default=False)
        self.summary_interval_s = self._read(_seconds, env, "ATTN_SCHED_SUMMARY_INTERVAL", 600.0, default=600.0)
        self.sglang_mode = self._read(_choice, env, "ATTN_SCHED_SGLANG_MODE", self.SGLANG_MODES, default="replace")
        # a bad value keeps the default: the guard only ever replaces metadata it proved wrong with exact
        # metadata (or none), so leaving it on cannot change a correct output, while failing it off would
        # silently re-admit the engine bugs it exists for; 'off' itself must be spelled out
        self.guard = self._read(_choice, env, "ATTN_SCHED_GUARD", self.GUARD_MODES, default="capture")

    def _read(self, parse, env, name, *args, default, invalid=None):
        """``invalid``: (value, what it means) used for a bad value; the default otherwise."""
        value, meaning = invalid or (default, "using the default")
        try:
            return parse(env, name, *args)
        except SwitchError as exc:
            self.errors.append(f"{exc}; {meaning}")
            return value

    def as_dict(self) -> dict:
        return {
            "ATTN_SCHED_DISABLE": self.disabled,
            "ATTN_SCHED_VERIFY": self.verify,
            "ATTN_SCHED_SUMMARY_INTERVAL": self.summary_interval_s,
            "ATTN_SCHED_SGLANG_MODE": self.sglang_mode,
            "ATTN_SCHED_GUARD": self.guard,
        }


_current: Switches | None = None


def current() -> Switches:
    """The process's switches, read once."""
    return _current if _current is not None else reload()


def reload(env: Mapping[str, str] | None = None) -> Switches:
    """(Re-)read the switches; each invalid value is logged once, saying what is used instead."""
    global _current
    _current = Switches(env)
    for message in _current.errors:
        log.error("attn-sched: %s", message)
    return _current
