"""Load integration/engines/ (scripts, not a package) for the tests without putting that folder on
sys.path: each module is registered under its own name, so the siblings' plain imports
(``from pack import pack``) find it, and nothing installed is shadowed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ENGINES = Path(__file__).resolve().parents[2] / "integration" / "engines"
ORDER = ("fatbin", "trim", "pack", "build_parts")  # each imports only those before it


def load(name: str) -> ModuleType:
    """integration/engines/<name>.py, with the siblings it imports loaded first."""
    for dep in ORDER[:ORDER.index(name) + 1]:
        if dep not in sys.modules:
            spec = importlib.util.spec_from_file_location(dep, ENGINES / f"{dep}.py")
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[dep] = module
            spec.loader.exec_module(module)
    return sys.modules[name]
