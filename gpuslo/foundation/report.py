"""The one HTML report kit: a page of sections, escaped paragraphs and tables, PNG charts."""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "NUMBER_FORMAT",
    "STYLESHEET",
    "Cell",
    "Chart",
    "Page",
    "Section",
    "Table",
    "chart",
    "format_cell",
    "subplots",
]

Cell = str | int | float | None
"""A table cell: text, a number (formatted by ``format_cell``) or nothing (``-``)."""

NUMBER_FORMAT = ",.4f"
"""How a float cell is written unless its column says otherwise."""

_MISSING = "-"

STYLESHEET = (
    "body{font-family:sans-serif;max-width:64em;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:0.5em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%;text-align:left}"
    "th{background:#eee}td.num{text-align:right}"
    "img{max-width:100%}.subtitle{color:#555}"
)


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def format_cell(value: object, spec: str | None = None) -> str:
    """A cell's text: a number by ``spec`` (default ``,`` or ``NUMBER_FORMAT``), ``-`` for none."""
    if value is None:
        return _MISSING
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if isinstance(value, numbers.Integral):
        return format(int(value), spec or ",")
    number = float(value)
    if math.isnan(number):
        return _MISSING
    return format(number, spec or NUMBER_FORMAT)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


class Table:
    """Rows under optional column names; each row a sequence of cells or a mapping by column."""

    def __init__(
        self,
        rows: Iterable[Sequence[Cell] | Mapping[str, Cell]],
        columns: Sequence[str] | None = None,
        formats: Mapping[str, str] | None = None,
        row_headers: bool = False,
    ) -> None:
        self.columns = list(columns) if columns is not None else None
        self.formats = dict(formats or {})
        self.row_headers = row_headers
        self.rows: list[list[Cell]] = []
        for row in rows:
            if isinstance(row, Mapping):
                if self.columns is None:
                    raise ValueError("rows given as mappings need column names")
                self.rows.append([row.get(c) for c in self.columns])
            else:
                self.rows.append(list(row))
        unknown = set(self.formats) - set(self.columns or ())
        if unknown:
            raise ValueError(f"formats for no such column: {', '.join(sorted(unknown))}")

    def html(self) -> str:
        """The ``<table>`` element."""
        out = ["<table>"]
        if self.columns is not None:
            out.append("<tr>" + "".join(f"<th>{_esc(c)}</th>" for c in self.columns) + "</tr>")
        for row in self.rows:
            cells = []
            for i, value in enumerate(row):
                column = self.columns[i] if self.columns and i < len(self.columns) else None
                text = _esc(format_cell(value, self.formats.get(column or "")))
                if i == 0 and self.row_headers:
                    cells.append(f"<th>{text}</th>")
                elif _is_number(value):
                    cells.append(f"<td class='num'>{text}</td>")
                else:
                    cells.append(f"<td>{text}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</table>")
        return "\n".join(out)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """``matplotlib.pyplot.subplots`` on the Agg backend (no display needed)."""
    figure, axes = _pyplot().subplots(nrows, ncols, **kwargs)
    return figure, axes


class Chart:
    """A PNG image: embedded as base64, or linked when it has a file name beside the page."""

    def __init__(self, png: bytes, alt: str, file: str | None = None) -> None:
        if file is not None and (not file or Path(file).name != file):
            raise ValueError(f"a chart's file is a plain file name, not {file!r}")
        self.png, self.alt, self.file = png, alt, file

    def html(self) -> str:
        """The ``<img>`` element, in a paragraph."""
        if self.file is None:
            src = "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")
        else:
            src = self.file
        return f"<p><img src='{_esc(src)}' alt='{_esc(self.alt)}'></p>"


def chart(figure: Figure, alt: str, file: str | None = None, dpi: float | None = None) -> Chart:
    """The figure as a PNG chart (at ``dpi``, default the figure's own); the figure is closed."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi="figure" if dpi is None else dpi)
    finally:
        _pyplot().close(figure)
    return Chart(buffer.getvalue(), alt, file)


class Section:
    """A heading and its blocks in order: paragraphs, tables, charts and subsections."""

    def __init__(self, heading: str, level: int = 2) -> None:
        if not 1 <= level <= 6:
            raise ValueError(f"heading level {level} is not 1-6")
        self.heading, self.level = heading, level
        self.blocks: list[str | Table | Chart | Section] = []

    def paragraph(self, text: str) -> None:
        """A paragraph of plain text."""
        self.blocks.append(f"<p>{_esc(text)}</p>")

    def table(
        self,
        rows: Iterable[Sequence[Cell] | Mapping[str, Cell]],
        columns: Sequence[str] | None = None,
        formats: Mapping[str, str] | None = None,
        row_headers: bool = False,
    ) -> Table:
        """A table of rows (see ``Table``), added here."""
        table = Table(rows, columns, formats, row_headers)
        self.blocks.append(table)
        return table

    def chart(
        self, figure: Figure, alt: str, file: str | None = None, dpi: float | None = None
    ) -> Chart:
        """A chart of a matplotlib figure (see ``chart``), added here."""
        image = chart(figure, alt, file, dpi)
        self.blocks.append(image)
        return image

    def section(self, heading: str) -> Section:
        """A subsection, one heading level down."""
        sub = Section(heading, min(self.level + 1, 6))
        self.blocks.append(sub)
        return sub

    def charts(self) -> Iterator[Chart]:
        """Every chart here and in the subsections, in order."""
        for block in self.blocks:
            if isinstance(block, Chart):
                yield block
            elif isinstance(block, Section):
                yield from block.charts()

    def html(self) -> str:
        """The heading and the blocks."""
        out = [f"<h{self.level}>{_esc(self.heading)}</h{self.level}>"]
        out += [b if isinstance(b, str) else b.html() for b in self.blocks]
        return "\n".join(out)


class Page(Section):
    """A whole report: the title (also the top heading), a subtitle, notes, then the blocks."""

    def __init__(self, title: str, subtitle: str | None = None, notes: Sequence[str] = ()) -> None:
        super().__init__(title, level=1)
        self.title = title
        if subtitle is not None:
            self.blocks.append(f"<p class='subtitle'>{_esc(subtitle)}</p>")
        for note in notes:
            self.paragraph(note)

    def render(self) -> str:
        """The HTML document."""
        return (
            "<!doctype html>\n<html><head><meta charset='utf-8'>"
            f"<title>{_esc(self.title)}</title>\n<style>{STYLESHEET}</style></head>\n<body>\n"
            f"{self.html()}\n</body></html>\n"
        )

    def write(self, path: Path) -> Path:
        """The document at ``path``, and the charts with file names beside it; ``path``."""
        files = {c.file: c.png for c in self.charts() if c.file is not None}
        if len(files) != sum(1 for c in self.charts() if c.file is not None):
            raise ValueError("two charts of the page have the same file name")
        path.parent.mkdir(parents=True, exist_ok=True)
        for name, png in files.items():
            (path.parent / name).write_bytes(png)
        path.write_text(self.render(), encoding="utf-8")
        return path
