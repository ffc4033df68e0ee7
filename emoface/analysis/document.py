"""A report as a list of blocks, written as Markdown and as one self-contained HTML file.

Both renderings come from the same blocks, so report.md and report.html never say different
things. Text uses a small inline Markdown (``**bold**``, ```code```, ``[text](link)``); tables carry
a sort value per cell for the HTML table's click-to-sort; figures are embedded in the HTML as data
URIs (PNG), with a link to the vector (SVG) file beside it. Numbers are formatted as a paper prints
them (:func:`fmt_p`, :func:`fmt_num`, :func:`fmt_ci`).
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# --- numbers as a paper prints them ---------------------------------------------------------

DASH = "–"  # a missing value


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def fmt_p(p: float | None) -> str:
    """A p-value: ``< 0.001`` below a thousandth, else three decimals; a dash when missing."""
    if not _finite(p):
        return DASH
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fmt_num(x: float | int | None, digits: int = 3) -> str:
    """A number: integers as integers, large values with one decimal, others with ``digits``."""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if not _finite(x):
        return DASH
    if isinstance(x, int):
        return str(x)
    if abs(x) >= 100:
        return f"{x:.1f}"
    return f"{x:.{digits}f}"


def fmt_ci(est: float | None, low: float | None, high: float | None, digits: int = 3,
           scale: float = 1.0, unit: str = "") -> str:
    """``estimate [low, high]`` (the interval left out when it is missing)."""
    def one(v):
        return fmt_num(v * scale if _finite(v) else v, digits) + (unit if _finite(v) else "")
    if _finite(low) or _finite(high):
        return f"{one(est)} [{one(low)}, {one(high)}]"
    return one(est)


_P_IN_TEXT = re.compile(r"(\bp = |\bp |Holm p |Holm |FWE p = )(\d+\.\d+)")


def paper_numbers(text: str) -> str:
    """p-values inside a sentence (a verdict line) as a paper prints them: ``p < 0.001`` for
    ``p = 0.0000``, three decimals otherwise."""
    def one(m: re.Match) -> str:
        prefix, v = m.group(1), float(m.group(2))
        if v < 0.001:
            return (prefix[:-2] if prefix.endswith("= ") else prefix) + "< 0.001"
        return prefix + f"{v:.3f}"
    return _P_IN_TEXT.sub(one, text)


# --- blocks ---------------------------------------------------------------------------------

@dataclass
class Heading:
    level: int
    text: str
    anchor: str | None = None


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Cell:
    """A table cell: its text (inline Markdown) and the value the HTML table sorts it by."""

    text: str
    sort: float | None = None


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    note: str | None = None  # a line under the table (e.g. "first 40 of 120 rows; ...")
    css: str = "data"


@dataclass
class Figure:
    png: Path  # on disk
    rel: str   # the PNG's path relative to the report
    svg_rel: str | None = None
    alt: str = ""


Block = Heading | Para | Bullets | Table | Figure


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Document:
        self.blocks.extend(blocks)
        return self


# --- Markdown -------------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(t: Table) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in t.header) + " |",
             "|" + "|".join("---" for _ in t.header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c.text) for c in row) + " |" for row in t.rows]
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines)


def to_markdown(doc: Document) -> str:
    parts = [f"# {doc.title}", ""]
    for b in doc.blocks:
        if isinstance(b, Heading):
            if b.anchor:
                parts += [f'<a id="{b.anchor}"></a>', ""]
            parts += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            parts += [b.text, ""]
        elif isinstance(b, Bullets):
            parts += [*(f"- {i}" for i in b.items), ""]
        elif isinstance(b, Table):
            parts += [md_table(b), ""]
        elif isinstance(b, Figure):
            vector = f" ([SVG]({b.svg_rel}))" if b.svg_rel else ""
            parts += [f"![{b.alt}]({b.rel}){vector}", ""]
    return "\n".join(parts)


# --- HTML -----------------------------------------------------------------------------------

_CODE = re.compile(r"(`[^`]+`)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![*\w])\*([^*\s][^*]*?)\*(?![*\w])")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def inline_html(text: str) -> str:
    """The small inline Markdown of report text as HTML (everything else escaped)."""
    out = []
    for part in _CODE.split(text):
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        s = html.escape(part, quote=False)
        s = _BOLD.sub(r"<strong>\1</strong>", s)
        s = _ITALIC.sub(r"<em>\1</em>", s)
        s = _LINK.sub(lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>', s)
        out.append(s)
    return "".join(out)


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;
 max-width:1320px;margin:2em auto;padding:0 1.2em}
h1{font-size:1.7em}h2{font-size:1.3em;margin-top:2.2em;border-bottom:1px solid #ddd}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px;font-size:.92em}
blockquote,.banner{background:#fff4d6;border-left:4px solid #e0a800;padding:.6em 1em;margin:1em 0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;margin:.6em 0}
th,td{border:1px solid #d6d6d6;padding:3px 7px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th{background:#f1f3f6;position:sticky;top:0}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[data-dir=asc]::after{content:" \\25B2"}
table.sortable th[data-dir=desc]::after{content:" \\25BC"}
tbody tr:nth-child(even){background:#fafafa}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}.note{font-size:13px;color:#444}
table.summary td:nth-child(2){min-width:26em}
table.summary td:nth-child(4),table.summary td:nth-child(5){min-width:11em;white-space:normal}
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, i) {
    th.addEventListener('click', function () {
      var dir = th.dataset.dir === 'asc' ? -1 : 1;
      table.querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = dir > 0 ? 'asc' : 'desc';
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(r) {
        var c = r.cells[i];
        if (!c) return '';
        return c.dataset.v !== undefined ? parseFloat(c.dataset.v) : c.textContent.trim();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x === 'number' && typeof y === 'number') return (x - y) * dir;
        if (typeof x === 'number') return -1;  // numbers before text (a dash, a blank)
        if (typeof y === 'number') return 1;
        return x.localeCompare(y, undefined, {numeric: true}) * dir;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def html_table(t: Table, sortable: bool = True) -> str:
    cls = f"{t.css} sortable" if sortable else t.css
    head = "".join(f"<th>{inline_html(h)}</th>" for h in t.header)
    body = []
    for row in t.rows:
        cells = []
        for c in row:
            if c.sort is not None and math.isfinite(c.sort):
                cells.append(f'<td class="num" data-v="{c.sort!r}">{inline_html(c.text)}</td>')
            else:
                cells.append(f"<td>{inline_html(c.text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">{inline_html(t.note)}</p>' if t.note else ""
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + f"</tbody></table></div>{note}")


def data_uri(path: Path, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def to_html(doc: Document, *, extra_css: str = "", extra_js: str = "") -> str:
    """One HTML file: styles, figures and the sort script inline (no network, no CDN)."""
    body = [f"<h1>{inline_html(doc.title)}</h1>"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            anchor = f' id="{html.escape(b.anchor)}"' if b.anchor else ""
            body.append(f"<h{b.level}{anchor}>{inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            if b.text.startswith("> "):
                body.append(f'<div class="banner">{inline_html(b.text[2:])}</div>')
            else:
                body.append(f"<p>{inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in b.items)
                        + "</ul>")
        elif isinstance(b, Table):
            body.append(html_table(b))
        elif isinstance(b, Figure):
            vector = f' · <a href="{html.escape(b.svg_rel)}">SVG</a>' if b.svg_rel else ""
            body.append(f'<figure><img src="{data_uri(b.png)}" alt="{html.escape(b.alt)}">'
                        f"<figcaption>{html.escape(b.rel)}{vector}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(doc.title)}</title><style>{CSS}{extra_css}</style></head>"
            "<body>\n" + "\n".join(body) + f"\n<script>{SORT_JS}{extra_js}</script>"
            "</body></html>\n")


def rows_note(shown: int, total: int, path: str) -> str | None:
    """The line under a cut table; None when every row is shown."""
    if shown >= total:
        return None
    return f"First {shown} of {total} rows; the full table is `{path}`."


def cells(values: Sequence[str]) -> list[Cell]:
    return [Cell(v) for v in values]
