"""Self-contained HTML pages for tables a reader opens alone or in the Snakemake report.

Tables and the claims page are written as one HTML file each (inline CSS, no scripts to fetch),
so the report shows them inline and a browser opens them from disk.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

from robust_mim.io import atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

PAGE_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;color:#222}"
              "table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.35em .6em;"
              "text-align:left;vertical-align:top}th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}"
              "code{background:#f4f4f4;padding:0 .2em}p.note{color:#555}")


def page(body_html: str, title: str) -> str:
    """A complete HTML document around ``body_html`` with the project's table style."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{PAGE_STYLE}</style></head><body>{body_html}</body></html>\n")


def markdown_page(markdown: str, title: str) -> str:
    """``markdown`` (tables included) as a complete HTML document."""
    import mistune

    return page(mistune.create_markdown(plugins=["table"], escape=False)(markdown), title)


def save_table(df: "pd.DataFrame", figures_dir: str | Path, name: str, title: str, note: str = "") -> Path:
    """Write ``df`` as ``figures_dir/name.html`` (a titled, styled page; ``note`` under the title)."""
    body = f"<h2>{html.escape(title)}</h2>"
    body += f"<p class='note'>{html.escape(note)}</p>" if note else ""
    body += df.to_html(index=False, escape=True, border=0)
    path = Path(figures_dir) / f"{name}.html"
    atomic_write_text(path, page(body, title))
    return path
