"""The documentation: README.md is a front page (short, every link alive) and docs/ holds the manual:
every setting and every registered metric is named there, and every relative link, image and anchor of
README.md and docs/*.md resolves."""

import dataclasses
import re
import unicodedata

import pytest

from tests.conftest import REPOSITORY

README = REPOSITORY / "README.md"
DOCS = REPOSITORY / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
FRONT_PAGE_WORDS = 2500


def docs_text() -> str:
    return "\n".join(page.read_text() for page in sorted(DOCS.glob("*.md")))


def without_code(text: str) -> str:
    """The text with fenced blocks and inline code spans removed: links are only looked for in prose."""
    text = re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, each space a hyphen."""
    heading = re.sub(r"`([^`]*)`", r"\1", heading.strip()).lower()
    kept = "".join(c for c in heading if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(page) -> set[str]:
    text = re.sub(r"^```.*?^```[^\n]*$", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {slug(match) for match in re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.MULTILINE)}


def links(page) -> list[str]:
    text = without_code(page.read_text())
    found = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)
    found += re.findall(r"<img[^>]+src=\"([^\"]+)\"", text)
    return found


def test_readme_is_a_front_page():
    words = len(README.read_text().split())  # as wc -w counts
    assert words <= FRONT_PAGE_WORDS, f"README.md has {words} words; move detail to docs/"


def test_every_setting_is_named_in_docs():
    from conf import Cluster, Execution, Settings
    from conf.analysis import Analysis

    text = docs_text()
    names = [item.name for kind in (Settings, Execution, Cluster, Analysis) for item in dataclasses.fields(kind)]
    missing = [name for name in names if f"`{name}`" not in text]
    assert not missing, f"settings not named (backticked) in docs/: {missing}"


def test_every_metric_is_named_in_docs():
    from metrics.registry import METRICS, discover

    discover()
    text = docs_text()
    missing = [name for name in METRICS if f"`{name}`" not in text]
    assert METRICS and not missing, f"metrics not named (backticked) in docs/: {missing}"


def test_every_docs_page_starts_with_its_command():
    for page in sorted(DOCS.glob("*.md")):
        lines = [line for line in page.read_text().splitlines() if line.strip() and not line.startswith("#")]
        assert lines and lines[0].startswith("`"), f"{page.name} does not start with a command"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPOSITORY).as_posix())
def test_relative_links_images_and_anchors_resolve(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: — not checked offline
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.name}: {broken}"


def test_every_gallery_image_is_on_the_front_page():
    text = README.read_text()
    missing = [image.name for image in sorted((DOCS / "gallery").glob("*.png")) if f"docs/gallery/{image.name}" not in text]
    assert not missing, missing
