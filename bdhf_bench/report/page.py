"""Render a :class:`Document` as one self-contained HTML page.

Figures are embedded as base64 ``data:`` URIs and the style sheet is inline, so the file opens from
disk, without a server and without any external resource.
"""

from __future__ import annotations

import base64
import re
from html import escape

from .document import Bullets, Document, Image, Table

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
caption { caption-side: top; font-style: italic; text-align: left; padding-bottom: 0.3em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; margin: 0.5em 0; }
p { line-height: 1.4; }
.scroll { overflow-x: auto; }
#headline { background: #f4f7fb; border-left: 4px solid #2b6cb0; padding: 0.2em 1em 0.6em; }
#headline li { margin: 0.25em 0; line-height: 1.4; }
"""


def anchor(title: str) -> str:
    """A section's id: its title in lower case, runs of other characters as one dash."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def table(t: Table) -> str:
    caption = f"<caption>{escape(t.caption)}</caption>" if t.caption else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in t.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in t.rows
    )
    table = f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def image(i: Image) -> str:
    data = base64.b64encode(i.data).decode("ascii")
    alt = escape(i.alt, quote=True)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}" title="{alt}"></figure>'


def render(document: Document) -> str:
    """The whole page, UTF-8."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(document.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(document.title)}</h1>",
    ]
    for section in document.sections:
        level = min(max(section.level, 2), 6)
        parts.append(f'<section id="{anchor(section.title)}">')
        parts.append(f"<h{level}>{escape(section.title)}</h{level}>")
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append(table(block))
            elif isinstance(block, Image):
                parts.append(image(block))
            elif isinstance(block, Bullets):
                items = "".join(f"<li>{escape(item)}</li>" for item in block.items)
                parts.append(f"<ul>{items}</ul>")
            else:
                parts.append(f"<p>{escape(block)}</p>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
