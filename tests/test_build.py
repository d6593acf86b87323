"""The Quarto-free render path on a small fixture project that uses every construct.

Checks what each format must contain, that execution is cached across prose
edits, and that broken sources stop the build with ``file:line`` while the
previous outputs stay intact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from coursebuild.errors import BuildError
from coursebuild.render import Project, install_site_libs, render_document

FIXTURE = Path(__file__).parent / "fixtures" / "mini"
LECTURE = Path("lectures/01-demo/lecture.qmd")
LAB = Path("lectures/01-demo/lab.qmd")


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini")
    shutil.copytree(FIXTURE, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("_site", ".jupyter_cache"))
    project = Project.load(root)
    install_site_libs(project)
    results = {src: render_document(project, root / src) for src in (LECTURE, LAB)}
    return project, results


def test_outputs_in_quarto_layout(built):
    project, _ = built
    out = project.output_dir / "lectures" / "01-demo"
    for name in ("lecture.html", "lecture.pdf", "lab.html", "lab.ipynb"):
        assert (out / name).stat().st_size > 0, name
    assert list((out / "lecture_files" / "figure").glob("fig-line-1.svg"))
    assert not list(project.output_dir.glob(".staging-*")), "staging folders left behind"


def test_deck_has_deck_content_and_notes(built):
    project, _ = built
    html = (project.output_dir / "lectures/01-demo/lecture.html").read_text()
    assert "DECK-ONLY" in html and "HANDOUT-ONLY" not in html
    assert not re.search(r"<section[^>]*>\s*</section>", html), "an empty slide"
    assert '<aside class="notes">' in html and "Speaker notes for this slide." in html
    assert "Figure 1: A straight line" in html
    assert "Equation\u00a0(1)" in html and "\\tag{1}" in html
    assert "Hastie et al. 2022" in html
    assert 'class="fragment"' in html  # the incremental list
    assert "Mini course" in html  # the footer
    remote = re.findall(r'src="(?:https?:)?//[^"]*', html) + re.findall(r'<link[^>]*href="(?:https?:)?//[^"]*', html)
    assert not remote, f"a deck must not load remote resources: {remote}"
    assert 'alt="A rising straight line."' in html


def test_handout_has_handout_content_numbered(built):
    project, _ = built
    text = pdf_text(project.output_dir / "lectures/01-demo/lecture.pdf")
    assert "HANDOUT-ONLY" in text and "DECK-ONLY" not in text
    assert "Speaker notes" not in text
    assert "Figure 1: A straight line" in text
    assert "Equation 1" in text and "(1)" in text
    assert "Section 1" in text
    assert "Hastie" in text and "References" in text
    assert "Contents" in text
    for raw in ("$$", "\\frac", "@fig-", "@eq-", "??", ":::"):
        assert raw not in text, raw


def test_lab_page_and_notebook(built):
    project, _ = built
    html = (project.output_dir / "lectures/01-demo/lab.html").read_text()
    assert "<details" in html and "Solution" in html  # folded solution
    assert "0.6666" in html  # the executed solution's output is on the page
    nb = nbformat.read(project.output_dir / "lectures/01-demo/lab.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].source == "# Lab 1 · Demo"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].source.startswith("# Requirements: numpy")
    assert all(c.outputs == [] for c in code), "notebooks ship without outputs"
    assert code[-1].metadata["jupyter"]["source_hidden"] is True  # the solution is folded
    assert not any("#|" in c.source for c in code)
    assert any("\\mathbb{R}^3" in c.source for c in nb.cells if c.cell_type == "markdown"), "macros expanded"


def test_prose_edit_does_not_reexecute_code_edit_does(built):
    project, _ = built
    src = project.root / LECTURE
    original = src.read_text()
    try:
        src.write_text(original.replace("A callout body.", "A callout body, edited."))
        again = render_document(project, src)
        assert again.executed.cached
        assert "edited" in (project.output_dir / "lectures/01-demo/lecture.html").read_text()
        src.write_text(original.replace("ax.plot(x, 2 * x)", "ax.plot(x, 3 * x)"))
        changed = render_document(project, src)
        assert not changed.executed.cached
    finally:
        src.write_text(original)
        render_document(project, src)


BROKEN = {
    # case: (edit of the lecture source, expected message, expected line or None = the edited line)
    "yaml": (lambda s: s.replace('subtitle: "A mini course"', 'subtitle: "A mini course" stray"'), "invalid YAML", None),
    # a raising cell is reported at the line of the raise, not at the cell's fence
    "cell": (lambda s: s.replace("x = np.linspace(0, 1, 10)", "x = 1 / 0"), "ZeroDivisionError", None),
    "raise-in-function": (lambda s: s.replace("x = np.linspace(0, 1, 10)",
                                              "x = np.linspace(0, 1, 10)\nnp.linalg.inv(np.zeros((2, 2)))"),
                          "LinAlgError", None),
    "empty-figure": (lambda s: s.replace("ax.plot(x, 2 * x)", "ax.plot(x, np.nan * x)"),
                     "nothing drawn", "fence"),
    "dead-kernel": (lambda s: s.replace("x = np.linspace(0, 1, 10)", "import os; os._exit(3)"),
                    "kernel died", "fence"),
    "typst": (lambda s: s.replace("HANDOUT-ONLY derivation text.",
                                  "HANDOUT-ONLY derivation text.\n\n```{=typst}\n#undefinedtypstfunction()\n```"),
              "typst: unknown variable", None),
    "verify": (lambda s: s.replace("x = np.linspace(0, 1, 10)",
                                   "x = np.linspace(0, 1, 10)\nfrom dlcourse.ledger import verify\n"
                                   "verify('w00-demo', claim='one is two', measured=1.0, theory=2.0, tol=0.1, "
                                   "why='exact', section='sec-risk')"),
               "VerificationError", None),
    "citation": (lambda s: s.replace("[@hastie2022surprises]", "[@nobody1999]"), "@nobody1999", None),
    "xref": (lambda s: s.replace("see @sec-risk", "see @sec-nowhere"), "@sec-nowhere", None),
    "math": (lambda s: s.replace("is minimised", "$\\undefinedmacro{x}$ is minimised"),
             "math that pandoc cannot convert", None),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_source_names_file_and_line_and_keeps_outputs(built, case):
    project, _ = built
    src = project.root / LECTURE
    original = src.read_text()
    edit, message, line = BROKEN[case]
    broken = edit(original)
    assert broken != original
    outputs = [project.output_dir / "lectures/01-demo" / n for n in ("lecture.html", "lecture.pdf")]
    before = [p.read_bytes() for p in outputs]
    src.write_text(broken)
    try:
        with pytest.raises(BuildError) as err:
            render_document(project, src)
    finally:
        src.write_text(original)
    exc = err.value
    assert exc.path == src and message in exc.message
    changed = [i for i, (a, b) in enumerate(zip(original.splitlines() + [""] * 9, broken.splitlines()), 1)
               if a != b]
    # an edit that inserts lines is reported at the inserted line that fails: the verify call
    # is the second inserted line, the bad Typst call the third (after a blank and the fence)
    expected_line = changed[0] + {"verify": 1, "typst": 2}.get(case, 0)
    if line == "fence":  # reported at the opening fence of the cell that drew or died
        expected_line = max(i for i, t in enumerate(broken.splitlines(), 1)
                            if t.startswith("```{python}") and i < changed[0])
    assert exc.line == expected_line, str(exc)
    assert [p.read_bytes() for p in outputs] == before, "a failed build must not touch earlier outputs"
    assert not list(project.output_dir.glob(".staging-*"))


def test_source_that_is_not_utf8_names_its_line(built):
    project, _ = built
    src = project.root / LECTURE
    original = src.read_bytes()
    k = original.index(b"HANDOUT-ONLY")
    src.write_bytes(original[:k] + b"\xff" + original[k:])
    try:
        with pytest.raises(BuildError, match="not UTF-8") as err:
            render_document(project, src)
    finally:
        src.write_bytes(original)
    assert err.value.line == original[:k].count(b"\n") + 1


def test_cell_timeout_is_reported_at_the_cell(built):
    project, _ = built
    src = project.root / LECTURE
    original = src.read_text()
    src.write_text(original.replace("x = np.linspace(0, 1, 10)", "import time; time.sleep(30)"))
    try:
        with pytest.raises(BuildError, match="timeout") as err:
            render_document(project, src, timeout=3)
    finally:
        src.write_text(original)
    fence = max(i for i, t in enumerate(original.splitlines(), 1)
                if t.startswith("```{python}") and i < original.splitlines().index("x = np.linspace(0, 1, 10)") + 1)
    assert err.value.line == fence


def test_execution_leaves_the_environment_alone(built):
    project, _ = built
    before = dict(os.environ)
    render_document(project, project.root / LECTURE, use_cache=False)
    assert dict(os.environ) == before


def test_rebuild_of_unchanged_sources_is_byte_identical(built):
    """Re-executing with the cache off gives the same deck, handout, figures and notebook, byte for byte."""
    project, _ = built
    folder = project.output_dir / "lectures/01-demo"

    def snapshot():
        return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    for src in (LECTURE, LAB):
        render_document(project, project.root / src, use_cache=False)
    first = snapshot()
    for src in (LECTURE, LAB):
        render_document(project, project.root / src, use_cache=False)
    second = snapshot()
    assert sorted(first) == sorted(second)
    differ = [str(k) for k in first if first[k] != second[k]]
    assert not differ, f"changed on an identical rebuild: {differ}"
    assert any(k.suffix == ".svg" for k in first) and any(k.suffix == ".pdf" for k in first)


def test_figure_without_alt_text_is_an_error(built):
    project, _ = built
    src = project.root / LECTURE
    original = src.read_text()
    src.write_text(original.replace('#| fig-alt: "A rising straight line."\n', ""))
    try:
        with pytest.raises(BuildError, match="fig-alt"):
            render_document(project, src)
    finally:
        src.write_text(original)


def test_cli_reports_file_line_and_exit_status(built, tmp_path):
    project, _ = built
    src = project.root / LECTURE
    original = src.read_text()
    src.write_text(original.replace("see @sec-risk", "see @sec-nowhere"))
    try:
        proc = subprocess.run([sys.executable, "-m", "coursebuild", "render", "--quarto-free",
                               "--project", str(project.root), str(src)], capture_output=True, text=True)
    finally:
        src.write_text(original)
    assert proc.returncode == 1
    assert "lectures/01-demo/lecture.qmd:" in proc.stderr and "@sec-nowhere" in proc.stderr


def test_notebook_json_is_plain(built):
    project, _ = built
    data = json.loads((project.output_dir / "lectures/01-demo/lab.ipynb").read_text())
    assert data["metadata"]["kernelspec"]["name"] == "python3"


@pytest.fixture
def two_week_project(tmp_path):
    """The mini course with its one lecture also as week 2 (the same labels in both weeks)."""
    root = tmp_path / "two"
    shutil.copytree(FIXTURE, root, symlinks=False, ignore=shutil.ignore_patterns("_site", ".jupyter_cache"))
    shutil.copytree(root / "lectures" / "01-demo", root / "lectures" / "02-again")
    src = root / "lectures" / "02-again" / "lecture.qmd"
    src.write_text(src.read_text().replace('title: "Week 1 · Demo"', 'title: "Week 2 · Again"'))
    return Project.load(root)


def test_course_book_numbers_within_chapters_and_keeps_weeks_apart(two_week_project):
    from coursebuild.book import build_book

    book = build_book(two_week_project)
    text = pdf_text(book.pdf)
    assert book.pages == 4 and book.weeks == ["01-demo", "02-again"]  # title and contents, 2 chapters, references
    # each week's "@eq-risk" resolves to its own chapter's equation, figures likewise
    assert "Equation (1.1)" in text and "Equation (2.1)" in text
    assert "Figure 1.1" in text and "Figure 2.1" in text
    assert text.count("Surprises in High-") == 1, "one bibliography"


def test_negative_control_book_without_relabelling_fails(two_week_project, monkeypatch):
    """Without the per-week labels the two weeks' identical labels collide and the build stops."""
    import coursebuild.book as book

    monkeypatch.setattr(book, "relabel", lambda md, week: md)
    with pytest.raises(BuildError, match="Duplicate identifier .sec-risk."):
        book.build_book(two_week_project)


def test_unchanged_source_is_skipped_and_any_input_change_is_not(built):
    """A second render of an unchanged source keeps its outputs (no pandoc, no Typst); a prose edit,
    a change of the project's options or of a cell's output each make it render again."""
    project, _ = built
    src = project.root / LECTURE
    deck = project.output_dir / "lectures/01-demo/lecture.html"
    render_document(project, src)
    first = render_document(project, src)
    assert first.skipped and first.executed.cached
    stamp = deck.stat().st_mtime_ns
    original, config = src.read_text(), (project.root / "_quarto.yml").read_text()
    try:
        src.write_text(original.replace("A callout body.", "A callout body, again."))
        prose = render_document(project, src)
        assert not prose.skipped and "again" in deck.read_text()
        (project.root / "_quarto.yml").write_text(config.replace("slide-number: c/t", "slide-number: c"))
        options = render_document(project, project.root / LECTURE)
        assert not options.skipped
    finally:
        src.write_text(original)
        (project.root / "_quarto.yml").write_text(config)
    restored = render_document(project, src)
    assert not restored.skipped and deck.stat().st_mtime_ns > stamp
    assert render_document(project, src).skipped
