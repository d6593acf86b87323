"""The handouts' running header holds any title, and the PDF check sees a collision.

slides/handout.typ chooses, per handout, the course's full title, its short title
or none beside the lecture's title, so that the two halves never touch. The check
(``inspect_pdf.header_collisions``) must pass such headers and reject a header
whose halves do touch (the negative control: the header of week 6 before the fix).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import typst

from coursebuild.inspect_pdf import header_collisions, tools_missing
from _needs import require

ROOT = Path(__file__).resolve().parents[1]
BODY = "#lorem(1200)\n"


@pytest.fixture(autouse=True)
def _poppler():
    require(tools_missing())


def compile_pdf(tmp_path: Path, preamble: str) -> Path:
    src = tmp_path / "doc.typ"
    src.write_text('#set page(paper: "a4", margin: (x: 2.1cm, y: 2.3cm))\n#set text(size: 10.5pt)\n'
                   + preamble + BODY, encoding="utf-8")
    pdf = tmp_path / "doc.pdf"
    typst.compile(str(src), output=str(pdf), root=str(tmp_path))
    return pdf


def course_header(title: str, short: str, lecture: str) -> str:
    course = (f"#let course = (title: [{title}], short-title: [{short}], doc-title: [{lecture}], "
              'blue: rgb("#0072B2"), code-bg: rgb("#f6f8fa"), muted: rgb("#777777"))\n')
    return course + (ROOT / "slides" / "handout.typ").read_text(encoding="utf-8") + "\n"


COURSE = "12 × 2 Lectures on Deep Learning, Geometry, Statistics and Statistical Mechanics"


@pytest.mark.parametrize("lecture", [
    "Week 1 · Statistical Learning",
    "Week 6 · Mean-Field Theory of Neural Networks",
    "Week 12 · The Statistical Physics of Deep Learning, and the Twelve Weeks Together Again",
    "Week 9 · " + "A Title Long Enough To Fill the Header Line On Its Own, Almost " * 2,
])
def test_the_house_header_never_collides(tmp_path, lecture):
    pdf = compile_pdf(tmp_path, course_header(COURSE, "12 × 2 Lectures on Deep Learning", lecture))
    assert header_collisions(pdf) == {}


def test_a_colliding_header_is_caught(tmp_path):
    # the week 6 header before the fix: both halves at full length, at 9 pt no room is left between them
    touching = ('#set page(header: context { if counter(page).get().first() > 1 { set text(size: 9pt); '
                f'[{COURSE}]; h(1fr); [Week 6 · Mean-Field Theory of Neural Networks] }} }})\n')
    pdf = compile_pdf(tmp_path, touching)
    collided = header_collisions(pdf)
    assert collided and min(collided) == 2, collided


def test_a_header_with_room_passes(tmp_path):
    # the same construction with a short left half: the elastic gap stays wide
    roomy = ('#set page(header: context { if counter(page).get().first() > 1 { set text(size: 8pt); '
             '[12 × 2 Lectures]; h(1fr); [Week 6 · Mean-Field Theory of Neural Networks] } })\n')
    assert header_collisions(compile_pdf(tmp_path, roomy)) == {}
