"""The documentation: the docs/ site builds with mkdocs --strict (a broken link or anchor fails it), and the README
is a front door whose links lead somewhere."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250


def _build(config: Path, site: Path, caplog: pytest.LogCaptureFixture) -> tuple[bool, str]:
    """``mkdocs build --strict -f CONFIG --site-dir SITE`` (what ``make docs`` runs), in this process: whether it
    built, and what it logged at WARNING and above (a strict build stops on any)."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mkdocs"):
        try:
            build(load_config(str(config), strict=True, site_dir=str(site)))
            built = True
        except Abort as exc:
            built = False
            logging.getLogger("mkdocs").error(str(exc))
    return built, "\n".join(r.getMessage() for r in caplog.records)


def test_the_docs_site_builds_strictly(tmp_path, caplog):
    built, said = _build(REPO / "mkdocs.yml", tmp_path / "site", caplog)
    assert built and said == "", said
    pages = {p.stem for p in (REPO / "docs").glob("*.md")}
    assert {
        "index",
        "cli",
        "pipelines",
        "backends",
        "api-teachers",
        "scale-out",
        "human-loop",
        "audit",
        "student",
        "benchmarks",
        "development",
    } <= pages
    assert all((tmp_path / "site" / ("" if p == "index" else p) / "index.html").is_file() for p in pages)


def test_a_broken_link_or_anchor_fails_the_build(tmp_path, caplog):
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    for bad in ("[gone](no-such-page.md)", "[gone](backends.md#no-such-section)"):
        docs = tmp_path / "docs"
        shutil.rmtree(docs, ignore_errors=True)
        shutil.copytree(REPO / "docs", docs)
        (docs / "index.md").write_text((docs / "index.md").read_text() + f"\n{bad}\n")
        (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump({**config, "docs_dir": str(docs)}))
        built, said = _build(tmp_path / "mkdocs.yml", tmp_path / "site", caplog)
        assert not built, bad
        assert "no-such-page.md" in said or "no-such-section" in said, said


def test_the_readme_is_a_front_door_whose_links_resolve():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, "the README is the front door: move reference text to docs/"
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "the README links to the docs pages"
    missing = [t for t in local if not (REPO / t).exists()]
    assert missing == [], f"README links to missing files: {missing}"
