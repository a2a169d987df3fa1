"""The ``attn-sched`` command line: readable help, every bench option explained, bad sizes refused in one line."""

from __future__ import annotations

import argparse

import pytest

from attn_sched_plugin import cli
from attn_sched_plugin.bench import main as bench_main


def _bench_parser() -> argparse.ArgumentParser:
    (sub,) = [a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices["bench"]


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        cli.parser().parse_args(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_top_level_help_is_plain_text(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = _run(["--help"], capsys)
    assert code == 0
    assert "``" not in out and "doctor" in out and "bench" in out


def test_every_bench_option_has_help_and_says_its_default(capsys, monkeypatch):
    undocumented = [a.option_strings for a in _bench_parser()._actions
                    if not isinstance(a, argparse._HelpAction) and "default" not in (a.help or "")]
    assert undocumented == []
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = _run(["bench", "--help"], capsys)
    assert code == 0
    for default in (bench_main.DEFAULT_BATCHES, bench_main.DEFAULT_CONTEXTS):
        assert "default " + " ".join(map(str, default)) in out
    assert "default benchmarks/results" in out and "%(default)" not in out


@pytest.mark.parametrize("argv, option, value", [
    (["--batch", "0"], "--batch", "0"),
    (["--batch", "4", "-2"], "--batch", "-2"),
    (["--context", "2k"], "--context", "2k"),
    (["--tp", "0"], "--tp", "0"),
    (["--replays", "-1"], "--replays", "-1"),
])
def test_bad_sizes_are_refused_in_one_line(argv, option, value, capsys):
    code, _, err = _run(["bench", *argv], capsys)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last == f"attn-sched bench: error: argument {option}: {value!r} is not valid; " \
                   "accepted values: a whole number >= 1"


def test_good_sizes_parse_as_ints():
    args = cli.parser().parse_args(["bench", "--batch", "1", "16", "--context", "4096", "--tp", "2"])
    assert (args.batch, args.context, args.tp, args.replays) == ([1, 16], [4096], 2, 200)
