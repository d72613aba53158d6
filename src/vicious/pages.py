"""The one shell of the project's HTML pages: the demo page, the sweep report and the audit page.

A page is a single self-contained file (images inline, no script, nothing fetched), so it
can be mailed or attached to a paper's supplement. Each page adds its own style rules to
the shared ones below; this module imports nothing of vicious.
"""

from __future__ import annotations

import html

BASE_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: %(width)s;
       padding: 0 1rem; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { padding: .3rem .7rem; border-bottom: 1px solid #ddd; }
img { max-width: 100%%; height: auto; } img.pixels { image-rendering: pixelated; }
code { background: #f6f8fa; padding: 0 .2rem; }
.note { color: #555; font-size: .9rem; }
"""


def html_page(title: str, body: str, *, style: str = "", width: str = "64rem") -> str:
    """A complete HTML document: ``title`` (escaped here), ``body`` (HTML, escaped by the
    caller), the shared style with the page's own ``style`` rules after it."""
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{BASE_STYLE % {'width': width}}{style}</style></head>"
            f"<body>\n{body}\n</body></html>\n")
