"""docs/results.md's tables are generated from benchmarks/results, never typed by hand."""

import runpy
from pathlib import Path


def test_results_tables_match_results():
    tables = runpy.run_path(str(Path(__file__).parents[2] / "benchmarks" / "tables.py"))
    page = tables["RESULTS_MD"].read_text()
    block = page.split(tables["START"], 1)[1].split(tables["END"], 1)[0]
    assert block.strip() == tables["render"]().strip()
