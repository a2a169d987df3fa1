"""Shared helpers for the integration tests: load the A/B harness, capture a real parser's result."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_serve_ab() -> ModuleType:
    """integration/ is not a package (users run the file directly), so load it by path."""
    spec = importlib.util.spec_from_file_location("serve_ab", ROOT / "integration" / "serve_ab.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_ab"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def serve_ab() -> ModuleType:
    return _load_serve_ab()


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "packaging: builds the wheel and sdist and runs them in a fresh venv (~30 s, at most ~2 min)")
