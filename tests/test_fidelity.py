"""What a Quarto user gets, checked with pandoc and the project filter alone.

Quarto hands pandoc the executed markdown and runs the project's filter
(`filters:` in _quarto.yml) before its own built-ins; it does nothing for notes,
pauses, the macro file's raw blocks or code inside callouts outside reveal.js
(quarto-cli issues #4189 and #2514; src/resources/filters/). So whatever the course
needs there must come from filters/course.lua. These tests convert every source as
Quarto would give it to pandoc (cells as Quarto's `.cell` Divs, no outputs), with
filters/course.lua and without quarto.lua, and check what a reader would see.
Each check is also run without the filter, where it must fail: the negative control.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import nbformat
import pypandoc
import pytest

from coursebuild.source import read_qmd

ROOT = Path(__file__).resolve().parents[1]
FILTER = ROOT / "filters" / "course.lua"
QUARTO_IPYNB = ROOT / "tests" / "fixtures" / "quarto_ipynb_cells.lua"  # Quarto's own step, after ours
WEEKS = sorted(p for p in (ROOT / "lectures").glob("[0-9][0-9]-*") if (p / "lecture.qmd").exists())


def quarto_markdown(path: Path, *, code: bool) -> str:
    """The markdown Quarto's Jupyter engine writes for pandoc, without outputs: each shown code
    cell is a ``::: {.cell}`` Div around a ``{.python .cell-code}`` block (src/core/jupyter/jupyter.ts)."""
    parts = []
    for cell in read_qmd(path).cells:
        if cell.kind == "markdown":
            parts.append(cell.source)
        elif code and cell.options.get("echo", True) is not False and cell.options.get("include", True):
            parts.append(f"::: {{.cell}}\n```{{.python .cell-code}}\n{cell.source.rstrip()}\n```\n:::")
    return "\n\n".join(parts)


def pandoc(markdown: str, to: str, *, with_filter: bool = True) -> str:
    args = [pypandoc.get_pandoc_path(), "-f", "markdown", "-t", to, "-s"]
    if with_filter:
        args += ["--lua-filter", str(FILTER)]
    if to == "ipynb":
        args += ["--lua-filter", str(QUARTO_IPYNB)]
    return subprocess.run(args, input=markdown.encode(), capture_output=True, check=True,
                          cwd=ROOT).stdout.decode()


def note_texts(markdown: str) -> list[str]:
    """The first eight words of every speaker note (read by pandoc itself)."""
    ast = json.loads(pandoc(markdown, "json", with_filter=False))
    notes = []

    def walk(blocks):
        for b in blocks:
            if b["t"] == "Div":
                (_, classes, _), content = b["c"]
                if "notes" in classes:
                    md = pandoc_blocks(content)
                    words = re.findall(r"[A-Za-z]{3,}", md)
                    if len(words) >= 8:  # eight words in a row: a note's own, not a phrase of the text
                        notes.append(" ".join(words[:8]))
                else:
                    walk(content)

    def pandoc_blocks(content):
        doc = json.dumps({"pandoc-api-version": ast["pandoc-api-version"], "meta": {}, "blocks": content})
        return subprocess.run([pypandoc.get_pandoc_path(), "-f", "json", "-t", "plain"], input=doc.encode(),
                              capture_output=True, check=True).stdout.decode()

    walk(ast["blocks"])
    return notes


def words_of(text: str) -> str:
    return " ".join(re.findall(r"[A-Za-z]{3,}", text))


@pytest.fixture(scope="module", params=WEEKS, ids=lambda p: p.name[:2])
def lecture(request):
    return quarto_markdown(request.param / "lecture.qmd", code=False)


def test_handouts_have_no_speaker_notes_or_pauses(lecture):
    notes = note_texts(lecture)
    assert notes, "a lecture without speaker notes"
    leaked = lambda typ: [n for n in notes if n in words_of(typ)]  # noqa: E731
    typ = pandoc(lecture, "typst")
    assert leaked(typ) == [], "speaker notes printed in the handout"
    assert not re.search(r"^\s*\. \. \.\s*$", typ, re.M), "a pause printed in the handout"
    # negative control: without the filter pandoc's Typst writer prints the notes
    assert leaked(pandoc(lecture, "typst", with_filter=False)), "the check cannot see notes"


EMPTY_SLIDE = re.compile(r"<section[^>]*>\s*(?:<h[12][^>]*>\s*</h[12]>\s*)?</section>")


def deck_sections(html: str) -> list[str]:
    return re.findall(r"<section[^>]*>.*?</section>", html, re.S)


def test_decks_have_no_empty_slide(lecture):
    html = pandoc(lecture, "revealjs")
    assert not EMPTY_SLIDE.search(html), "an empty slide"
    # the first slide after the title is the first heading of the source, not the macro file
    first = deck_sections(html)[0]
    assert "newcommand" not in first and "<!--" not in first
    # negative control: without the filter the macro file's raw blocks make a slide of their own
    raw = pandoc(lecture, "revealjs", with_filter=False)
    assert re.search(r"newcommand|<!--", deck_sections(raw)[0]), "the check cannot see the macro slide"


def solution_code(path: Path) -> list[str]:
    """Code of the cells inside folded callouts (the worked solutions), from the source."""
    out, depth, inside = [], 0, False
    for cell in read_qmd(path).cells:
        if cell.kind == "markdown":
            for line in cell.source.splitlines():
                if re.match(r"^:::+\s*\{\.callout-\w+[^}]*collapse=\"true\"", line):
                    inside = True
                elif inside and re.match(r"^:::+\s*$", line):
                    inside = False
        elif inside and cell.options.get("echo", True) is not False:
            out.append(cell.source.strip())
    return out


@pytest.mark.parametrize("week", WEEKS, ids=lambda p: p.name[:2])
def test_lab_solutions_are_code_cells_in_the_notebook(week):
    lab = week / "lab.qmd"
    solutions = solution_code(lab)
    assert solutions, f"{lab}: no folded worked solution with code"
    markdown = quarto_markdown(lab, code=True)

    def cells(with_filter):
        nb = nbformat.reads(pandoc(markdown, "ipynb", with_filter=with_filter), as_version=4)
        return [c.source.strip() for c in nb.cells if c.cell_type == "code"], nb

    code, nb = cells(True)
    missing = [s.splitlines()[0] for s in solutions if s not in code]
    assert missing == [], f"solutions not runnable cells: {missing}"
    hidden = [c for c in nb.cells if c.cell_type == "code" and c.source.strip() in solutions]
    assert all(c.metadata.get("source_hidden") in ("true", True) for c in hidden), "folded solutions shown"
    # negative control: without the filter the solutions are quoted markdown, not cells
    assert not any(s in cells(False)[0] for s in solutions), "the check cannot see quoted solutions"
