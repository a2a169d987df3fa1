"""Environment switches: accepted values, and one clear message per invalid value."""

from __future__ import annotations

import logging

import pytest

from attn_sched_plugin import switches

FLAGS = {"ATTN_SCHED_DISABLE": "disabled", "ATTN_SCHED_VERIFY": "verify"}


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_defaults():
    s = switches.reload(env={})
    assert (s.disabled, s.verify, s.summary_interval_s, s.sglang_mode) == (False, False, 600.0, "replace")
    assert s.errors == []


@pytest.mark.parametrize("name, attr", FLAGS.items())
@pytest.mark.parametrize("raw, value", [("1", True), ("true", True), ("YES", True), (" on ", True), ("0", False),
                                        ("false", False), ("No", False), ("off", False), ("", False)])
def test_flag_values(name, attr, raw, value, caplog):
    s = switches.reload(env={name: raw})
    assert getattr(s, attr) is value
    assert errors(caplog) == []


@pytest.mark.parametrize("name, attr", FLAGS.items())
@pytest.mark.parametrize("raw", ["2", "enabled", "y"])
def test_flag_invalid(name, attr, raw, caplog):
    with caplog.at_level(logging.ERROR, logger="attn_sched_plugin"):
        s = switches.reload(env={name: raw})
        switches.current()  # reading again must not repeat the message
    kill_switch = name == "ATTN_SCHED_DISABLE"
    assert getattr(s, attr) is kill_switch  # the kill switch fails closed; the others keep their default
    (message,) = errors(caplog)
    assert name in message and repr(raw) in message and "not readable" in message
    assert all(v in message for v in ("1/true/yes/on", "0/false/no/off"))
    assert ("the plugin is therefore off" in message) is kill_switch
    assert ("using the default" in message) is not kill_switch


@pytest.mark.parametrize("raw, value", [("0", 0.0), ("2.5", 2.5), ("600", 600.0), ("", 600.0)])
def test_summary_interval_values(raw, value, caplog):
    assert switches.reload(env={"ATTN_SCHED_SUMMARY_INTERVAL": raw}).summary_interval_s == value
    assert errors(caplog) == []


@pytest.mark.parametrize("raw", ["-1", "soon", "nan", "NaN", "inf", "-inf", "1e999"])
def test_summary_interval_invalid(raw, caplog):
    with caplog.at_level(logging.ERROR, logger="attn_sched_plugin"):
        s = switches.reload(env={"ATTN_SCHED_SUMMARY_INTERVAL": raw})
    assert s.summary_interval_s == 600.0
    (message,) = errors(caplog)
    assert "ATTN_SCHED_SUMMARY_INTERVAL" in message and "seconds >= 0 (0 = only at exit)" in message


@pytest.mark.parametrize("raw, value", [("keep-native", "keep-native"), ("replace", "replace"), (" REPLACE ", "replace"),
                                        ("", "replace")])
def test_sglang_mode_values(raw, value, caplog):
    assert switches.reload(env={"ATTN_SCHED_SGLANG_MODE": raw}).sglang_mode == value
    assert errors(caplog) == []


def test_sglang_mode_invalid(caplog):
    with caplog.at_level(logging.ERROR, logger="attn_sched_plugin"):
        s = switches.reload(env={"ATTN_SCHED_SGLANG_MODE": "outside"})
    assert s.sglang_mode == "replace"
    (message,) = errors(caplog)
    assert "ATTN_SCHED_SGLANG_MODE" in message and "'outside'" in message and "replace, keep-native" in message


@pytest.mark.parametrize("raw, value", [("", "capture"), ("capture", "capture"), (" Always ", "always"), ("off", "off")])
def test_guard_values(raw, value, caplog):
    assert switches.reload(env={"ATTN_SCHED_GUARD": raw}).guard == value
    assert errors(caplog) == []


@pytest.mark.parametrize("raw", ["0", "no", "disable", "capture,always"])
def test_guard_invalid_keeps_the_guard_on(raw, caplog):
    """Only an exact 'off' turns the guard off: it replaces nothing it has not proven wrong."""
    with caplog.at_level(logging.ERROR, logger="attn_sched_plugin"):
        s = switches.reload(env={"ATTN_SCHED_GUARD": raw})
    assert s.guard == "capture"
    (message,) = errors(caplog)
    assert "ATTN_SCHED_GUARD" in message and repr(raw) in message and "capture, always, off" in message


def test_several_invalid_values_one_message_each(caplog):
    env = {"ATTN_SCHED_DISABLE": "maybe", "ATTN_SCHED_VERIFY": "2", "ATTN_SCHED_SGLANG_MODE": "x"}
    with caplog.at_level(logging.ERROR, logger="attn_sched_plugin"):
        s = switches.reload(env=env)
    messages = errors(caplog)
    assert len(messages) == 3 and len(s.errors) == 3
    assert all(sum(name in m for m in messages) == 1 for name in env)


def test_as_dict_names_every_variable():
    assert set(switches.reload(env={}).as_dict()) == {
        "ATTN_SCHED_DISABLE", "ATTN_SCHED_VERIFY", "ATTN_SCHED_SUMMARY_INTERVAL", "ATTN_SCHED_SGLANG_MODE",
        "ATTN_SCHED_GUARD"}


def test_current_reads_the_process_environment_once(monkeypatch):
    monkeypatch.setenv("ATTN_SCHED_DISABLE", "1")
    switches._current = None
    assert switches.current().disabled is True
    monkeypatch.setenv("ATTN_SCHED_DISABLE", "0")
    assert switches.current().disabled is True  # read once per process (reload re-reads)
    assert switches.reload().disabled is False
