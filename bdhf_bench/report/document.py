"""A renderer-neutral report document: sections of paragraphs, tables and images.

The build step fills one :class:`Document`; markdown.py and page.py turn the same document into
leaderboard.md and index.html, so the two pages never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Table:
    """Cells are already formatted strings."""

    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Image:
    """A figure: its path relative to the report folder, its alt text and its PNG bytes."""

    path: str
    alt: str
    data: bytes


@dataclass
class Bullets:
    """A list of short plain-text items (the headline's per-optimizer and per-unit lines)."""

    items: list[str]


Block = str | Table | Image | Bullets
"""A paragraph of plain text, a table, an image or a list."""


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2


@dataclass
class Document:
    title: str
    sections: list[Section] = field(default_factory=list)

    def add(self, title: str, *blocks: Block, level: int = 2) -> Section:
        """Append a section and return it (more blocks may be appended later)."""
        section = Section(title, list(blocks), level)
        self.sections.append(section)
        return section
