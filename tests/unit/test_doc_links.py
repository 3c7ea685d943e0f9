"""Every relative Markdown link in the README, docs/ and the role READMEs points at a file or
directory of the repository (anchors and external URLs are not checked)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("roles/*/README.md")])
# [text](target) and reference definitions "[label]: target"; fenced code is skipped.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|^\[[^\]]+\]:\s+(\S+)", re.M)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def relative_links(doc: Path) -> list[str]:
    text = FENCE.sub("", doc.read_text())
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:|^#", t)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    missing = [t for t in relative_links(doc) if not (doc.parent / t.split("#")[0]).exists()]
    assert missing == [], f"{doc.relative_to(ROOT)} links to missing files: {missing}"


def test_a_missing_target_is_found(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("[a](nowhere.md) [b](https://e.org) [c](#anchor)\n```\n[d](no.md)\n```\n")
    assert relative_links(doc) == ["nowhere.md"]
