"""docs/how-it-works.svg is exactly what docs/make_diagram.py writes, and is well-formed SVG."""

from __future__ import annotations

import importlib.util
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _render() -> str:
    spec = importlib.util.spec_from_file_location("make_diagram", DOCS / "make_diagram.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_diagram"] = module  # its dataclass looks the module up while being built
    spec.loader.exec_module(module)
    return module.render()


def test_committed_svg_matches_the_script():
    assert (DOCS / "how-it-works.svg").read_text(encoding="utf-8") == _render(), (
        "docs/how-it-works.svg is stale: run `python docs/make_diagram.py` and commit the result"
    )


def test_svg_is_well_formed_and_names_the_data_path():
    root = ET.fromstring(_render())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for label in ("FA3 call", "Descriptor", "Key", "Per-step cache", "get_scheduler_metadata of the SAME FA3 build",
                  "CUDA-graph capture", "scheduler_metadata=", "Pass through untouched", "FA3 build"):
        assert label in text, label
