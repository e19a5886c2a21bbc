"""mkdocs hook: the guide page is the README itself, with its repository links pointed at the site's pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent
# Repository paths as the README and the Vietnamese pages write them -> the pages that show them on the site.
_README_LINKS = {"](docs/vi/README.md)": "](vi/README.md)", "](benchmarks/RESULTS.md)": "](results.md)"}
_VI_LINKS = {"](../../README.md)": "](../index.md)"}


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Give the guide page the README's text, and point repository links at their pages on the site."""
    links: dict[str, str] = {}
    if page.file.src_uri == "index.md":
        markdown, links = (_ROOT / "README.md").read_text(encoding="utf-8"), _README_LINKS
    elif page.file.src_uri.startswith("vi/"):
        links = _VI_LINKS
    for old, new in links.items():
        markdown = markdown.replace(old, new)
    return markdown
