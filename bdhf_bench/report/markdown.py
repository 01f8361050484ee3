"""Render a :class:`Document` as GitHub-flavoured markdown (figures linked by relative path)."""

from __future__ import annotations

from .document import Bullets, Document, Image, Table


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _line(text: str) -> str:
    """One list item on one line (markdown would otherwise end the item at a newline)."""
    return text.replace("\n", " ")


def table(t: Table) -> str:
    """A pipe table; a caption, when given, goes above it in italics."""
    lines = [f"*{t.caption}*", ""] if t.caption else []
    lines.append("| " + " | ".join(_cell(h) for h in t.headers) + " |")
    lines.append("|" + "|".join(" --- " for _ in t.headers) + "|")
    lines.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows)
    return "\n".join(lines)


def image(i: Image) -> str:
    alt = i.alt.replace("[", "(").replace("]", ")")
    return f"![{alt}]({i.path})"


def render(document: Document) -> str:
    """The whole page."""
    parts = [f"# {document.title}"]
    for section in document.sections:
        parts.append(f"{'#' * section.level} {section.title}")
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append(table(block))
            elif isinstance(block, Image):
                parts.append(image(block))
            elif isinstance(block, Bullets):
                parts.append("\n".join(f"- {_line(item)}" for item in block.items))
            else:
                parts.append(block)
    return "\n\n".join(parts) + "\n"
