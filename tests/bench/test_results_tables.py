"""docs/results.md's tables are generated from benchmarks/results, never typed by hand."""

import runpy
from pathlib import Path


def test_results_tables_match_results():
    tables = runpy.run_path(str(Path(__file__).parents[2] / "benchmarks" / "tables.py"))
    page = tables["RESULTS_MD"].read_text()
    block = page.split(tables["START"], 1)[1].split(tables["END"], 1)[0]
    assert block.strip() == tables["render"]().strip()


def test_readme_headline_is_generated_from_the_plans():
    tables = runpy.run_path(str(Path(__file__).parents[2] / "benchmarks" / "tables.py"))
    block = tables["README"].read_text().split(tables["HEAD_START"], 1)[1].split(tables["HEAD_END"], 1)[0]
    assert block.strip() == tables["headline"]().strip()
    assert block.count("\n| ") == sum(1 for _ in tables["HEADLINE"]) + 1  # every plan has its row (one on-variant each)


def test_each_plans_table_md_is_its_report():
    """A plan's committed table.md is what the current report prints from its results (regenerate with
    ``python3 -m integration.serve_ab report --out DIR > DIR/table.md``)."""
    from integration.serve_ab.results import State
    from integration.serve_ab.table import report

    tables = runpy.run_path(str(Path(__file__).parents[2] / "benchmarks" / "tables.py"))
    for name in tables["REAL_ENGINES"]:
        plan = tables["RESULTS"] / "real-engines" / name
        assert (plan / "table.md").read_text().strip() == report(State.load(plan)).strip(), name
