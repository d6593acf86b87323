"""Every week's deck, handout and lab, checked as a person would see them.

The course is rendered once (the session fixture ``course`` in conftest.py).
Then:

* every deck is opened in headless Chromium and walked slide by slide with all
  fragments shown (``coursebuild.inspect_deck``): no overflow, math typeset,
  images loaded, no JavaScript error, no request to another host. Screenshots
  and a contact sheet per week go to ``_site/checks/<week>/``;
* every handout PDF (``coursebuild.inspect_pdf``): fonts embedded, no markup
  left in the text, no nearly empty page, every figure referred to has a
  caption; page images and a contact sheet go to ``_site/checks/<week>/handout/``;
* every lab notebook (``coursebuild.inspect_notebook``): valid, no outputs,
  imports only what its first cell names, runs top to bottom in a fresh kernel;
  no notebook is tracked by git;
* every image in the decks and lab pages is a figure with caption and alt text,
  and every relative link of the built pages resolves.

Slide counts, page counts and the seconds each check took are printed at the
end of the run under "visual checks" (and stored with ``record_property``).
``tests/test_visual_gates.py`` shows that each check fails on a deliberate defect.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from coursebuild.inspect_deck import browser_missing, figure_problems, inspect_decks, link_problems
from coursebuild.inspect_notebook import execution_problems, structure_problems
from coursebuild.inspect_pdf import inspect_pdf, tools_missing
from _needs import require

ROOT = Path(__file__).resolve().parents[1]
WEEKS = sorted(p.name for p in (ROOT / "lectures").glob("[0-9][0-9]-*") if p.is_dir())


def out(project, week: str) -> Path:
    return project.output_dir / "lectures" / week


def report(failures: list[str]) -> str:
    return f"{len(failures)} problems:\n  " + "\n  ".join(failures)


@pytest.fixture(scope="session")
def deck_reports(course, visual_summary):
    """Every week's deck inspected in one browser session: {week: DeckReport}."""
    project, _ = course
    require(browser_missing())
    start = time.perf_counter()
    decks = {w: out(project, w) / "lecture.html" for w in WEEKS}
    reports = inspect_decks(project.output_dir, {w: d for w, d in decks.items() if d.exists()},
                            project.output_dir / "checks")
    total = sum(len(r.slides) for r in reports.values())
    visual_summary.append(f"decks: {len(reports)} decks, {total} slides in {time.perf_counter() - start:.1f} s; "
                          f"screenshots in {project.output_dir.name}/checks/<week>/")
    for w, r in reports.items():
        visual_summary.append(f"  {w}: {len(r.slides)} slides, {len(r.failures)} problems, {r.seconds:.1f} s")
    return reports


@pytest.mark.parametrize("week", WEEKS)
def test_deck_in_browser(deck_reports, week, record_property):
    assert week in deck_reports, f"{week}: lecture.html was not built"
    rep = deck_reports[week]
    record_property("slides", len(rep.slides))
    record_property("contact_sheet", rep.contact_sheet)
    assert rep.slides, f"{week}: no slides found"
    failures = rep.failures
    assert not failures, report(failures)


@pytest.mark.parametrize("week", WEEKS)
def test_handout_pdf(course, week, visual_summary, record_property):
    project, _ = course
    require(tools_missing())
    pdf = out(project, week) / "lecture.pdf"
    assert pdf.exists(), f"{week}: lecture.pdf was not built"
    start = time.perf_counter()
    rep = inspect_pdf(pdf, project.output_dir / "checks" / week / "handout")
    seconds = time.perf_counter() - start
    record_property("pages", len(rep.pages))
    visual_summary.append(f"handout {week}: {len(rep.pages)} pages, {len(rep.failures)} problems, {seconds:.1f} s")
    failures = [f"{week}/lecture.pdf: {f}" for f in rep.failures]
    assert not failures, report(failures)


@pytest.mark.parametrize("week", WEEKS)
def test_lab_notebook(course, week, visual_summary, record_property):
    project, _ = course
    notebook = out(project, week) / "lab.ipynb"
    assert notebook.exists(), f"{week}: lab.ipynb was not built"
    problems = structure_problems(notebook)
    assert not problems, report([f"{week}/lab.ipynb: {p}" for p in problems])
    ran, seconds = execution_problems(notebook)
    record_property("seconds", round(seconds, 1))
    visual_summary.append(f"notebook {week}: ran in a fresh kernel in {seconds:.1f} s"
                          + (" (FAILED)" if ran else ""))
    assert not ran, report([f"{week}/lab.ipynb: {p}" for p in ran])


@pytest.mark.parametrize("week", WEEKS)
def test_figures_have_caption_and_alt_text(course, week):
    project, _ = course
    pages = [out(project, week) / name for name in ("lecture.html", "lab.html")]
    assert all(p.exists() for p in pages), f"{week}: lecture.html or lab.html was not built"
    found = [f"{week}/{p.name}: {q}" for p in pages for q in figure_problems(p.read_text(encoding="utf-8"))]
    assert not found, report(found)


@pytest.mark.parametrize("week", WEEKS)
def test_slides_pdf_has_one_page_per_slide(slide_pdfs, deck_reports, week):
    """The printed deck: one page per slide of the deck the browser walked (fragments together)."""
    require(browser_missing())
    require(tools_missing())
    assert week in slide_pdfs, f"{week}: slides.pdf was not printed"
    pdf, reveal_count = slide_pdfs[week]
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True, timeout=60).stdout
    pages = int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))
    assert pages == reveal_count == len(deck_reports[week].slides), (pages, reveal_count, len(deck_reports[week].slides))


def test_built_pages_links_resolve(course, slide_pdfs):
    """The home page's links to decks, slide PDFs, handouts, labs and notebooks, and every relative link of those pages."""
    project, _ = course
    pages = [project.output_dir / "index.html"]
    pages += [p for w in WEEKS for p in (out(project, w) / "lecture.html", out(project, w) / "lab.html") if p.exists()]
    found = [f"{p.relative_to(project.output_dir)}: {q}" for p in pages for q in link_problems(p)]
    assert not found, report(found)


def test_no_notebook_is_tracked():
    """Notebooks are built from lab.qmd: git tracks none and ignores them (no outputs can be committed)."""
    try:
        tracked = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True,
                                 check=True, timeout=60).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    assert tracked == [], f"notebooks tracked by git: {tracked}"
    ignored = subprocess.run(["git", "check-ignore", "-q", "lectures/01-x/lab.ipynb"], cwd=ROOT, timeout=60)
    assert ignored.returncode == 0, ".gitignore must ignore *.ipynb"
