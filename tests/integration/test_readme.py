"""The README as a newcomer meets it, also as the package's long description on an index, and the docs/
pages it links to. (Its install line is run by test_packaging.py; docs/results.md's tables are checked by
tests/bench.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = sorted((ROOT / "docs").glob("*.md"))
REPO_FILES = ("https://github.com/attn-sched-plugin/attn-sched-plugin/blob/main/",
              "https://raw.githubusercontent.com/attn-sched-plugin/attn-sched-plugin/main/")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        if seen[slug]:
            seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


def _broken(source: Path, target: str) -> bool:
    """A link to a missing file, or to a heading its markdown file does not have."""
    path, _, anchor = target.partition("#")
    file = (source.parent / path).resolve() if path else source
    if not file.is_file():
        return True
    return bool(anchor) and file.suffix == ".md" and anchor not in _anchors(file)


def test_links_are_absolute_and_name_files_of_this_repository():
    """The sdist and the index page carry no docs/ or CHANGELOG: a relative link would break there."""
    targets = LINK.findall(README)
    assert targets, "no links found: the pattern is stale"
    assert [t for t in targets if not t.startswith("https://")] == []
    paths = [t.removeprefix(prefix) for t in targets for prefix in REPO_FILES if t.startswith(prefix)]
    assert paths, "no link into this repository found"
    assert [p for p in paths if _broken(ROOT / "README.md", p)] == []


def test_readme_links_every_docs_page():
    assert [p.name for p in DOCS if f"/main/docs/{p.name}" not in README] == []


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_docs_links_resolve(page: Path):
    """docs/ pages are read on GitHub or in a checkout: relative links, each to a file and heading that exist."""
    targets = [t for t in LINK.findall(page.read_text(encoding="utf-8")) if not re.match(r"[a-z]+:", t)]
    assert [t for t in targets if _broken(page, t)] == []


def test_switches_table_lists_every_variable_the_package_reads():
    read = {name for path in (ROOT / "attn_sched_plugin").rglob("*.py")
            for name in re.findall(r"ATTN_SCHED_[A-Z0-9_]+", path.read_text(encoding="utf-8"))}
    table = README.split("### Switches", 1)[1].split("\n\n", 1)[0]
    assert set(re.findall(r"^\| `(ATTN_SCHED_[A-Z0-9_]+)`", table, flags=re.M)) == read


def test_no_test_counts_typed_by_hand():
    """Counts go stale with the next test; the README says what each env runs, tox prints how many."""
    assert re.findall(r"\b\d+ passed\b", README) == []
