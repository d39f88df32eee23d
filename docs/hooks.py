"""MkDocs hooks (mkdocs.yml): files kept outside docs/ that the pages show.

The benchmark chart stays where ``make bench`` writes it; the site gets a copy,
and the pages' links to it (relative to docs/, as a repository viewer reads
them) are pointed at that copy.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent.parent
# A page's link to a repository file -> where the site keeps the file.
PUBLISHED = {"../benchmarks/results/latest.png": "assets/benchmarks-latest.png"}


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Adds each published repository file to the site."""
    for link, site_path in PUBLISHED.items():
        source = ROOT / "docs" / link
        files.append(File.generated(config, site_path, abs_src_path=str(source)))
    return files


def on_page_markdown(
    markdown: str, page: Page, config: MkDocsConfig, files: Files
) -> str:
    """Points a page's links to published files at their copies in the site."""
    for link, site_path in PUBLISHED.items():
        markdown = markdown.replace(f"]({link})", f"]({site_path})")
    return markdown
