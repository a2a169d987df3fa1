"""Shared helpers for the integration tests: capture a real engine parser's result, build A/B plans."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from integration.serve_ab import cli


class _Parsed(BaseException):
    """Raised from inside parse_args so the engine's entry point stops before it runs anything."""


def _capture_parse(entry: Callable[[], object], argv: list[str], monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """Run an engine's real command-line entry with ``sys.argv = argv`` and return the Namespace
    its parser produced, stopping right after parsing (no server, no client, no network).

    A parser rejection (SystemExit from argparse) fails the test with the engine's own message.
    """
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    monkeypatch.setattr(sys, "argv", list(argv))
    try:
        entry()
    except _Parsed as parsed:
        return parsed.args[0]
    except SystemExit as exc:
        pytest.fail(f"the engine's parser rejected {argv!r} (exit {exc.code}); see captured stderr")
    pytest.fail(f"{entry!r} returned without parsing a command line")


@pytest.fixture
def capture_parse(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], object], list[str]], argparse.Namespace]:
    return lambda entry, argv: _capture_parse(entry, argv, monkeypatch)


def _make_plan(*args: str):
    a = cli.build_parser().parse_args(["run", *args])
    return cli.make_plan(a), cli.make_settings(a)


@pytest.fixture
def plan_from():
    """A plan and its settings from ``run`` options, as the command line builds them."""
    return _make_plan


@pytest.fixture
def models_dir(tmp_path) -> Path:
    """Model dirs as the GPU machine has them (config.json only; 4 layers)."""
    for name in ("m", "m2"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "config.json").write_text(json.dumps({"num_hidden_layers": 4}))
    return tmp_path / "models"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "packaging: builds the wheel and sdist and runs them in a fresh venv (~30 s, at most ~2 min)")
