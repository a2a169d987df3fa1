"""The README's result tables are generated from benchmarks/results, never typed by hand."""

import runpy
from pathlib import Path


def test_readme_tables_match_results():
    tables = runpy.run_path(str(Path(__file__).parents[2] / "benchmarks" / "tables.py"))
    readme = Path(__file__).parents[2].joinpath("README.md").read_text()
    block = readme.split(tables["START"], 1)[1].split(tables["END"], 1)[0]
    assert block.strip() == tables["render"]().strip()
