"""The README as a newcomer meets it, also as the package's long description on an index.
(Its install line is run by test_packaging.py, its result tables are checked by tests/bench.)"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
REPO_FILES = ("https://github.com/attn-sched-plugin/attn-sched-plugin/blob/main/",
              "https://raw.githubusercontent.com/attn-sched-plugin/attn-sched-plugin/main/")


def test_links_are_absolute_and_name_files_of_this_repository():
    """The sdist and the index page carry no docs/ or CHANGELOG: a relative link would break there."""
    targets = re.findall(r"\]\(([^)\s]+)\)", README)
    assert targets, "no links found: the pattern is stale"
    assert [t for t in targets if not t.startswith("https://")] == []
    paths = [t.removeprefix(prefix) for t in targets for prefix in REPO_FILES if t.startswith(prefix)]
    assert paths, "no link into this repository found"
    assert [p for p in paths if not (ROOT / p).is_file()] == []


def test_switches_table_lists_every_variable_the_package_reads():
    read = {name for path in (ROOT / "attn_sched_plugin").rglob("*.py")
            for name in re.findall(r"ATTN_SCHED_[A-Z0-9_]+", path.read_text(encoding="utf-8"))}
    table = README.split("### Switches", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"^\| `(ATTN_SCHED_[A-Z0-9_]+)`", table, flags=re.M)) == read


def test_no_test_counts_typed_by_hand():
    """Counts go stale with the next test; the README says what each env runs, tox prints how many."""
    assert re.findall(r"\b\d+ passed\b", README) == []
