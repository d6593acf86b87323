"""Look at a rendered PDF handout the way a reader does (poppler-utils and Pillow).

``inspect_pdf`` reports, per handout:

* fonts that are not embedded (``pdffonts``): the PDF would look different,
  or not render, on a machine without them;
* markup left in the text (``pdftotext``, page by page): ``$$``, ``\\(``,
  ``\\begin{``, ``\\frac``, ``??`` and ``[?]`` (unresolved references or
  citations), ``@fig-``/``@sec-``/``@eq-``… (Quarto cross-references that were
  not resolved), ``:::`` fences and ``{{<`` shortcodes;
* nearly empty pages: fewer than ``MIN_WORDS`` words *and* less than
  ``MIN_INK`` of the page inked (rendered with ``pdftoppm``), so a page that
  holds only a figure is fine;
* a running header whose two halves touch (``header_collisions``);
* figures without a caption: every "Figure N" the text refers to must have a
  caption "Figure N:" (Typst's figure caption), and the captions must be
  numbered 1, 2, 3, …

With ``out_dir`` it also writes the pages as PNGs and a contact sheet.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

MARKUP = [  # (what, pattern) searched in the text of each page
    ("raw display math '$$'", r"\$\$"),
    ("raw math delimiters", r"\\\(|\\\)|\\\[|\\\]"),
    ("raw LaTeX environment", r"\\(?:begin|end)\{"),
    ("raw LaTeX command", r"\\(?:frac|sqrt|sum|mathbb|mathcal|cite|ref|eqref|label)\b"),
    ("unresolved reference '??'", r"\?\?"),
    ("unresolved citation '[?]'", r"\[\?\]"),
    ("unresolved cross-reference", r"\??@(?:fig|sec|eq|tbl|lst|thm|lem|cor|prp|def|exm|exr|rem)-[\w-]*"),
    ("unrendered fence or shortcode", r"^\s*:::|\{\{<|>\}\}"),
]
MIN_WORDS, MIN_INK = 15, 0.015  # a page below both is "nearly empty"
TOOLS = ("pdfinfo", "pdffonts", "pdftotext", "pdftoppm")


@dataclass
class Page:
    number: int
    words: int
    ink: float  # share of pixels darker than light grey
    problems: list[str] = field(default_factory=list)


@dataclass
class PdfReport:
    path: str
    pages: list[Page] = field(default_factory=list)
    fonts: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # document-wide
    contact_sheet: str | None = None

    @property
    def failures(self) -> list[str]:
        """Every problem, one line each, naming the page."""
        return self.problems + [f"p. {p.number}: {q}" for p in self.pages for q in p.problems]


def tools_missing() -> str | None:
    """Why the PDF checks cannot run here, or None."""
    missing = [t for t in TOOLS if not shutil.which(t)]
    if not missing:
        return None
    return (f"{', '.join(missing)} missing: run 'bash tools/setup.sh --test-tools' (Debian/Ubuntu: "
            "apt-get install poppler-utils; macOS: brew install poppler)")


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=True, timeout=120).stdout


def fonts(pdf: Path) -> list[dict]:
    """``pdffonts`` rows; the columns are read from the right (long names push them over)."""
    rows = []
    for line in _run("pdffonts", str(pdf)).splitlines()[2:]:
        t = line.split()
        if len(t) >= 8:
            rows.append({"name": t[0], "type": " ".join(t[1:-6]), "embedded": t[-5] == "yes"})
    return rows


def markup_problems(text: str) -> list[str]:
    """Markup left in a page's text: one line per kind, with the matches and their line."""
    out = []
    for what, pattern in MARKUP:
        hits = list(re.finditer(pattern, text, re.M))
        if hits:
            m = hits[0]
            line = text[text.rfind("\n", 0, m.start()) + 1:].split("\n", 1)[0]
            found = ", ".join(dict.fromkeys(repr(h.group(0).strip()) for h in hits))
            out.append(f"{what}: {found} in \"{' '.join(line.split())[:90]}\"")
    return out


def figure_caption_problems(text: str) -> list[str]:
    """Figures referred to without a caption, and captions not numbered 1, 2, 3, …"""
    # pdftotext may place a glyph of the caption's math (a radical sign, say)
    # between "Figure" and its number: allow one stray non-word character
    captions = [int(n) for n in re.findall(r"\bFigure\s*[^\w\s]?\s*(\d+):", text)]
    referred = {int(n) for n in re.findall(r"\bFigure\s+(\d+)\b", text)}
    out = [f"'Figure {n}' is referred to but has no caption 'Figure {n}:'" for n in sorted(referred - set(captions))]
    if sorted(set(captions)) != list(range(1, len(set(captions)) + 1)):
        out.append(f"figure captions are not numbered 1, 2, 3, ...: {sorted(set(captions))}")
    return out


def ink(png: Path) -> float:
    """Share of a page's pixels that are not (nearly) white."""
    from PIL import Image

    with Image.open(png) as im:
        hist = im.convert("L").histogram()
    return sum(hist[:200]) / max(sum(hist), 1)


HEADER_BAND = 0.08  # the running header lies in the top 8 % of the page (A4: 67 pt; the margin is 65 pt)


def header_collisions(pdf: Path) -> dict[int, str]:
    """Pages whose running header has its two halves colliding, with the header's text.

    The header puts the course on the left and the lecture on the right with an
    elastic gap between them (``h(1fr)``). A header that runs from the left edge
    of the text to its right edge must keep a gap of at least ``2 em`` between two
    of its words; without one the halves touch ("...MechanicsWeek 6").
    Words and their boxes come from ``pdftotext -bbox``.
    """
    xml = _run("pdftotext", "-bbox", str(pdf), "-")
    found = {}
    for k, page in enumerate(re.findall(r"<page (.*?)</page>", xml, re.S), 1):
        height = float(re.search(r'height="([\d.]+)"', page).group(1))
        words = [(float(a), float(b), float(c), float(d), w) for a, b, c, d, w in re.findall(
            r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*?)</word>', page)]
        body = [w for w in words if w[1] > HEADER_BAND * height]
        head = sorted((w for w in words if w[3] < HEADER_BAND * height), key=lambda w: w[0])
        if len(head) < 2 or not body:
            continue
        left, right = min(w[0] for w in body), max(w[2] for w in body)
        size = max(w[3] - w[1] for w in head)
        spans = head[0][0] <= left + size and head[-1][2] >= right - size
        gaps = [b[0] - a[2] for a, b in zip(head, head[1:])]
        if spans and max(gaps) < 2 * size:
            found[k] = " ".join(w[4] for w in head)
    return found


def inspect_pdf(pdf: Path, out_dir: Path | None = None, *, dpi: int = 40) -> PdfReport:
    """Check one PDF; with ``out_dir``, write ``page-NN.png`` and ``contact.png`` there."""
    why = tools_missing()
    if why:
        raise RuntimeError(why)
    pdf = Path(pdf)
    rep = PdfReport(str(pdf))
    info = _run("pdfinfo", str(pdf))
    n = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))
    rep.fonts = fonts(pdf)
    rep.problems += [f"font not embedded: {f['name']} ({f['type']})" for f in rep.fonts if not f["embedded"]]
    texts = _run("pdftotext", "-layout", str(pdf), "-").split("\f")
    rep.problems += figure_caption_problems("\n".join(texts))
    collisions = header_collisions(pdf)
    with tempfile.TemporaryDirectory(prefix="coursebuild-pdf-") as tmp:
        pages_dir = Path(out_dir) if out_dir is not None else Path(tmp)
        pages_dir.mkdir(parents=True, exist_ok=True)
        for old in pages_dir.glob("page-*.png"):
            old.unlink()
        subprocess.run(["pdftoppm", "-r", str(dpi), "-png", str(pdf), str(pages_dir / "raw")],
                       check=True, timeout=300)
        # pdftoppm pads the page number to the page count's width: name them page-NN.png
        pngs = []
        for raw in sorted(pages_dir.glob("raw-*.png"), key=lambda p: int(p.stem.rsplit("-", 1)[1])):
            pngs.append(raw.replace(pages_dir / f"page-{int(raw.stem.rsplit('-', 1)[1]):02d}.png"))
        for k in range(1, n + 1):
            text = texts[k - 1] if k - 1 < len(texts) else ""
            page = Page(k, len(re.findall(r"\w\w+", text)), round(ink(pngs[k - 1]), 4) if k <= len(pngs) else 0.0)
            page.problems += markup_problems(text)
            if k in collisions:
                page.problems.append(f"running header halves collide: {collisions[k]!r}")
            if page.words < MIN_WORDS and page.ink < MIN_INK:
                page.problems.append(f"nearly empty page ({page.words} words, {page.ink:.1%} ink)")
            rep.pages.append(page)
        if out_dir is not None and pngs:
            from .inspect_deck import contact_sheet

            contact_sheet([(png, f"p. {p.number}", bool(p.problems)) for png, p in zip(pngs, rep.pages)],
                          pages_dir / "contact.png", thumb_w=160, cols=8)
            rep.contact_sheet = str(pages_dir / "contact.png")
    return rep
