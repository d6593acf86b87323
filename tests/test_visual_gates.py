"""The visual checks can fail: each deliberate defect is caught, and clean material passes.

A copy of the fixture project (tests/fixtures/mini) gets one extra slide per
defect (overflow, KaTeX error, raw TeX, untypeset math, missing image, remote
script, JavaScript errors, an empty slide), rendered through the project's own
Quarto-free path, then opened in headless Chromium by the same
``inspect_decks`` that checks the real weeks. Deck-only defects sit in
``content-visible when-format="revealjs"`` blocks so that the handout still
compiles. Hand-made slides of known size pin the overflow numbers down, and a
deck whose script loops forever shows that the watchdog ends the run. PDFs with
raw markup, a nearly empty page, a figure without caption and a font that is
not embedded, and notebooks that import unnamed packages or raise, go through
``inspect_pdf`` and ``inspect_notebook`` in the same way.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import nbformat
import pytest
import typst

from coursebuild.inspect_deck import browser_missing, figure_problems, inspect_decks, link_problems
from coursebuild.inspect_notebook import execution_problems, structure_problems
from coursebuild.inspect_pdf import figure_caption_problems, inspect_pdf, markup_problems, tools_missing
from _needs import require
from coursebuild.render import Project, install_site_libs, render_document

FIXTURE = Path(__file__).parent / "fixtures" / "mini"
LECTURE = Path("lectures/01-demo/lecture.qmd")
LAB = Path("lectures/01-demo/lab.qmd")
DECK_ONLY = '::: {{.content-visible when-format="revealjs"}}\n{}\n:::\n'
ITEMS = "\n".join(f"- Item {k}: a line of text that takes a line of the slide" for k in range(1, 25))
CODE = "```python\n" + "\n".join(f"value_{k} = {k} * {'1234567890 + ' * 12}0" for k in range(40)) + "\n```"
GATES = {  # slide title -> body (each slide holds one defect, or none)
    "Overflow gate": DECK_ONLY.format(ITEMS),
    "Long code scrolls": DECK_ONLY.format(CODE),  # inside a scrolling box: not an overflow
    "KaTeX error gate": DECK_ONLY.format(r"Unknown to KaTeX: $\undefinedmacro{x}$; cannot parse: $\frac{1}{2$."),
    "Raw TeX gate": DECK_ONLY.format(r"Left as text: \\frac{1}{2} and \$\$ x \$\$."),
    "Untypeset math gate": '```{=html}\n<div class="math display">x^2 + y^2</div>\n```\n',
    "Missing image gate": DECK_ONLY.format('![A picture that is not there.](missing.png){fig-alt="Nothing."}'),
    "Remote script gate": '```{=html}\n<script src="https://cdn.example.com/gate.js"></script>\n```\n',
    "JavaScript error gate": (
        "```{=html}\n<script>\nconsole.error('deliberate error while loading');\n"
        "window.addEventListener('load', () => Reveal.on('slidechanged', e => {\n"
        "  if (e.currentSlide.id === 'javascript-error-gate') throw new Error('deliberate error on this slide');\n"
        "}));\n</script>\n```\n"),
}
EMPTY = "---\n\n<!-- a slide that holds nothing but a comment -->\n\n"  # pandoc opens an untitled slide


def needs(why: str | None) -> None:
    require(why)


@pytest.fixture(scope="module")
def gates(tmp_path_factory):
    """The fixture project with the gate slides, rendered and inspected: (project, report, seconds)."""
    needs(browser_missing())
    root = tmp_path_factory.mktemp("gates")
    shutil.copytree(FIXTURE, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("_site", ".jupyter_cache"))
    src = root / LECTURE
    slides = "".join(f"## {title}\n\n{body}\n" for title, body in GATES.items()) + EMPTY
    src.write_text(src.read_text().replace("# References {.unnumbered}", slides + "# References {.unnumbered}"))
    project = Project.load(root)
    install_site_libs(project)
    for s in (LECTURE, LAB):
        render_document(project, root / s)
    deck = project.output_path(src, "revealjs")
    start = time.perf_counter()
    report = inspect_decks(project.output_dir, {"gates": deck}, project.output_dir / "checks")["gates"]
    return project, report, time.perf_counter() - start


def test_clean_slides_pass(gates):
    _, report, _ = gates
    clean = [s for s in report.slides if "gate" not in s.title and s.title != "(untitled)"]
    assert len(clean) >= 6  # the fixture's own slides and the long code
    assert [p for s in clean for p in s.problems] == []
    assert report.slide("Columns and a callout").fragments == 3  # shown with every fragment


def test_overflow_is_caught(gates):
    problems = gates[1].slide("Overflow gate").problems
    assert problems and all(p.startswith("OVERFLOW:") for p in problems), problems
    assert "px past the bottom" in problems[0] and "1280x720" in problems[0]


MEASURE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="../site_libs/revealjs/dist/reveal.css">
<style>.reveal h2, .reveal p { margin: 0; height: 60px; line-height: 60px; font-size: 30px; }</style></head>
<body><div class="reveal"><div class="slides">
<section><h2>Fits</h2><div style="height: 660px; width: 1280px"></div></section>
<section><h2>Too tall</h2><div style="height: 660px; width: 10px"></div><p>60</p></section>
<section><h2>Too wide</h2><div style="height: 10px; width: 1300px"></div></section>
<section><h2>Scrolls</h2><div style="height: 600px; overflow: auto"><div style="height: 3000px"></div></div></section>
<section style="height: 720px; overflow-y: auto"><h2>Scrollable slide</h2><div style="height: 3000px"></div></section>
</div></div>
<script src="../site_libs/revealjs/dist/reveal.js"></script>
<script>Reveal.initialize({width: 1280, height: 720, margin: 0.05, center: false, hash: true});</script>
</body></html>"""


@pytest.mark.parametrize("viewport", [(800, 600), (1920, 1080)])
def test_overflow_is_measured_in_slide_pixels(gates, viewport):
    """Hand-made slides with known sizes: the numbers are exact, whatever the window."""
    project, _, _ = gates
    deck = project.output_dir / "measure" / "deck.html"
    deck.parent.mkdir(exist_ok=True)
    deck.write_text(MEASURE)
    rep = inspect_decks(project.output_dir, {"measure": deck}, viewport=viewport)["measure"]
    # a 60 px heading and 660 px: exactly the 720 px slide, nothing past it; a box or a
    # whole slide (Quarto's .scrollable) that scrolls is no overflow
    assert rep.slide("Fits").problems == [] and rep.slide("Scrolls").problems == []
    assert rep.slide("Scrollable slide").problems == []
    tall, wide = rep.slide("Too tall").problems, rep.slide("Too wide").problems
    assert len(tall) == 1 and tall[0].startswith("OVERFLOW: p '60'") and "(60px past the bottom)" in tall[0], tall
    assert len(wide) == 1 and "(20px past the right)" in wide[0], wide


def test_a_deck_that_hangs_is_killed(gates):
    """A script that loops forever when slide 2 is shown: the watchdog kills Chromium, nothing hangs."""
    project, _, _ = gates
    deck = project.output_dir / "measure" / "hang.html"
    deck.parent.mkdir(exist_ok=True)
    deck.write_text(MEASURE.replace("</body>", "<script>Reveal.on('slidechanged', e => {"
                                    " if (e.indexh === 2) { while (true) {} } });</script></body>"))
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="gave up after 8 s"):
        inspect_decks(project.output_dir, {"hang": deck}, limit=8)
    assert time.perf_counter() - start < 30


def test_code_that_scrolls_is_not_an_overflow(gates):
    assert gates[1].slide("Long code scrolls").problems == []


def test_katex_error_is_caught(gates):
    problems = gates[1].slide("KaTeX error gate").problems
    assert len(problems) == 2 and all(p.startswith("MATH ERROR (KaTeX):") for p in problems), problems
    assert "undefined macro \\undefinedmacro" in " ".join(problems) and "ParseError" in " ".join(problems)


def test_raw_tex_is_caught(gates):
    problems = " | ".join(gates[1].slide("Raw TeX gate").problems)
    assert "MATH NOT TYPESET" in problems and "\\frac{1}{2}" in problems and "$$" in problems


def test_untypeset_math_element_is_caught(gates):
    assert gates[1].slide("Untypeset math gate").problems == ["MATH NOT TYPESET: x^2 + y^2"]


def test_empty_slide_is_caught(gates):
    _, report, _ = gates
    empty = [s for s in report.slides if "EMPTY SLIDE: nothing visible on it" in s.problems]
    last_gate = report.slide("JavaScript error gate")
    assert [(s.h, s.v, s.title) for s in empty] == [(last_gate.h, last_gate.v + 1, "(untitled)")]


def test_missing_image_is_caught(gates):
    _, report, _ = gates
    assert report.slide("Missing image gate").problems == ["IMAGE FAILED: missing.png"]
    assert any("missing.png (HTTP 404)" in p for p in report.problems)


def test_remote_request_is_aborted_and_reported(gates):
    _, report, seconds = gates
    assert report.remote_requests == ["https://cdn.example.com/gate.js"]
    assert report.slide("Remote script gate").problems == ["REMOTE REQUEST (aborted): https://cdn.example.com/gate.js"]
    assert seconds < 60, "a remote request must be aborted, not awaited"


def test_javascript_errors_are_caught(gates):
    _, report, _ = gates
    assert "JS CONSOLE ERROR: deliberate error while loading" in report.problems
    problems = report.slide("JavaScript error gate").problems
    assert problems == ["JS ERROR: Error: deliberate error on this slide"], problems


def test_every_failure_names_deck_and_slide(gates):
    _, report, _ = gates
    lines = report.failures
    assert any(line.startswith("gates: slide ") and "'Overflow gate'" in line for line in lines)
    assert all(line.startswith("gates: ") for line in lines)


def test_screenshots_and_contact_sheet(gates):
    project, report, _ = gates
    out = project.output_dir / "checks" / "gates"
    assert sorted(p.name for p in out.glob("slide-*.png")) == sorted(s.png for s in report.slides)
    assert (out / "contact.png").stat().st_size > 10_000
    assert json.loads((out / "report.json").read_text())["name"] == "gates"


# ----------------------------------------------------------------------------
# figures and links in HTML
# ----------------------------------------------------------------------------
def test_figure_checks(gates):
    project, _, _ = gates
    deck = project.output_path(project.root / LECTURE, "revealjs")
    assert figure_problems(deck.read_text()) == []  # the rendered figures have caption and alt text
    bad = ('<p><img src="a.png" alt="A."></p>'
           '<figure><img src="b.png"><figcaption>Figure 2: b.</figcaption></figure>'
           '<figure><img data-src="c.svg" alt="C."></figure>')
    assert figure_problems(bad) == [
        "line 1: image a.png is not inside a <figure>",
        "line 1: image b.png has no alt text",
        "line 1: figure c.svg has no caption",
    ]


def test_link_check(tmp_path):
    (tmp_path / "there.pdf").write_text("x")
    page = tmp_path / "index.html"
    page.write_text('<a href="there.pdf">ok</a> <a href="gone.ipynb">gone</a> <a href="#top">anchor</a>'
                    ' <a href="https://example.org/">remote</a> <img src="there.pdf?v=1" alt="x">')
    assert link_problems(page) == ["link does not resolve: gone.ipynb"]


# ----------------------------------------------------------------------------
# PDFs
# ----------------------------------------------------------------------------
BAD_TYPST = r"""
#set page(paper: "a5")
= Leftovers
Some prose that a reader would read, with markup that was never rendered:
\$\$ x \$\$, \\frac{a}{b}, \\begin{align}, \@fig-missing, ?? and \[?\].
As Figure 3 shows, the rest of this page is ordinary text of a reasonable length.
#pagebreak()
The end.
#pagebreak()
#rect(width: 100%, height: 80%, fill: gray)
"""

# a one-page PDF whose Helvetica is not embedded (written by hand: Typst embeds everything)
_OBJS = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
         b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 300] /Contents 4 0 R"
         b" /Resources << /Font << /F1 5 0 R >> >> >>",
         None, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
_STREAM = b"BT /F1 12 Tf 20 250 Td (Helvetica is not embedded in this file at all.) Tj ET"


def _unembedded_pdf(path: Path) -> None:
    objs = list(_OBJS)
    objs[3] = b"<< /Length %d >>\nstream\n" % len(_STREAM) + _STREAM + b"\nendstream"
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for k, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % k + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    path.write_bytes(bytes(out))


def test_pdf_with_raw_markup_and_empty_page_is_caught(tmp_path):
    needs(tools_missing())
    src = tmp_path / "bad.typ"
    src.write_text(BAD_TYPST)
    typst.compile(str(src), output=str(tmp_path / "bad.pdf"), ignore_system_fonts=True)
    rep = inspect_pdf(tmp_path / "bad.pdf", tmp_path / "pages")
    assert len(rep.pages) == 3
    first = " | ".join(rep.pages[0].problems)
    for what in ("'$$'", "'\\\\frac'", "'\\\\begin{'", "'??'", "'[?]'", "'@fig-missing'"):
        assert what in first, (what, first)
    assert rep.pages[1].problems == [f"nearly empty page ({rep.pages[1].words} words, {rep.pages[1].ink:.1%} ink)"]
    assert rep.pages[2].problems == [], "a page holding only a figure is not empty"
    assert "'Figure 3' is referred to but has no caption 'Figure 3:'" in rep.problems
    assert (tmp_path / "pages" / "contact.png").exists() and (tmp_path / "pages" / "page-03.png").exists()


def test_font_not_embedded_is_caught(tmp_path):
    needs(tools_missing())
    _unembedded_pdf(tmp_path / "helvetica.pdf")
    rep = inspect_pdf(tmp_path / "helvetica.pdf")
    assert rep.problems == ["font not embedded: Helvetica (Type 1)"]


def test_clean_handout_passes(gates):
    needs(tools_missing())
    project, _, _ = gates
    rep = inspect_pdf(project.output_path(project.root / LECTURE, "typst"))
    assert rep.failures == [] and len(rep.pages) >= 2


def test_markup_patterns():
    assert markup_problems("Cost 5 $ and 10 $ today; the ratio a/b; see Section 2.") == []
    assert markup_problems("::: {.notes}")[0].startswith("unrendered fence")
    assert figure_caption_problems("Figure 1: a. Figure 2: b. As Figure 2 shows.") == []
    assert figure_caption_problems("Figure 2: b.") == ["figure captions are not numbered 1, 2, 3, ...: [2]"]
    # a radical sign of the caption's math extracted between "Figure" and its number
    assert figure_caption_problems("Figure\u221a1: with sqrt 2. As Figure 1 shows.") == []


# ----------------------------------------------------------------------------
# notebooks
# ----------------------------------------------------------------------------
def _notebook(path: Path, *sources: str, outputs: bool = False) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    if outputs:
        nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="stored\n")]
    nbformat.write(nb, path)
    return path


def test_notebook_structure_is_checked(tmp_path):
    ok = _notebook(tmp_path / "ok.ipynb", "# Requirements: numpy, scikit-learn\nimport numpy as np",
                   "%matplotlib inline\nimport json, os.path\nfrom sklearn.linear_model import Ridge")
    assert structure_problems(ok) == []
    unnamed = _notebook(tmp_path / "unnamed.ipynb", "# Requirements: numpy\nimport numpy as np",
                        "import scipy.linalg\nfrom dlcourse import plotting", outputs=True)
    assert structure_problems(unnamed) == [
        "code cells [1] have stored outputs",
        "code cell 2 imports 'dlcourse', which is neither in the standard library nor named in "
        "'# Requirements: numpy'",
        "code cell 2 imports 'scipy', which is neither in the standard library nor named in "
        "'# Requirements: numpy'",
    ]
    anonymous = _notebook(tmp_path / "anonymous.ipynb", "import numpy as np")
    assert structure_problems(anonymous) == ["the first code cell does not start with '# Requirements: pkg, pkg, ...'"]
    (tmp_path / "broken.ipynb").write_text('{"cells": 3}')
    assert structure_problems(tmp_path / "broken.ipynb")[0].startswith("not a valid notebook")


def test_notebook_execution_is_checked(gates, tmp_path):
    project, _, _ = gates
    lab = project.output_path(project.root / LAB, "ipynb")
    assert structure_problems(lab) == []
    assert execution_problems(lab, timeout=120)[0] == []
    raising = _notebook(tmp_path / "raising.ipynb", "# Requirements: numpy\nimport numpy as np",
                        "raise ValueError('deliberate')")
    assert execution_problems(raising, timeout=120)[0] == ["code cell 2 raised ValueError: deliberate"]


def test_notebook_that_times_out_is_reported(tmp_path):
    slow = _notebook(tmp_path / "slow.ipynb", "# Requirements: numpy\nimport time", "time.sleep(30)")
    problems, seconds = execution_problems(slow, timeout=3)
    assert len(problems) == 1 and problems[0].startswith("did not run to the end: CellTimeoutError"), problems
    assert seconds < 25
