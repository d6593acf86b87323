"""The rendered course, shared by the render tests (marked ``render``), and their summary."""

# ----------------------------------------------------------------------------
# The rendered course, shared by tests/test_course.py and tests/test_visual.py,
# and a terminal summary of the visual checks (slides, pages, seconds per week).
# ----------------------------------------------------------------------------
import time
from pathlib import Path

import pytest


VISUAL_SUMMARY = pytest.StashKey[list]()
BOOK = pytest.StashKey[object]()  # the course book built after the render (coursebuild.book.Book)


@pytest.fixture(scope="session")
def course(pytestconfig):
    """The whole project rendered through the Quarto-free path (cached cells are not re-run)."""
    from coursebuild.render import Project, install_site_libs, install_static_figures, render_document

    project = Project.load(Path(__file__).resolve().parents[1])
    install_site_libs(project)
    install_static_figures(project)
    rendered = {}
    start = time.perf_counter()
    from coursebuild.book import build_book, note_page_count

    for src in project.sources():
        rendered[src] = render_document(project, src)
    # as `coursebuild render` does after a render of the whole course
    book = build_book(project)
    note_page_count(project.output_dir, book.pages)
    pytestconfig.stash[BOOK] = book
    lines = pytestconfig.stash.setdefault(VISUAL_SUMMARY, [])
    lines.append(f"course rendered in {time.perf_counter() - start:.0f} s (course book: {book.pages} pages, "
                 f"{book.seconds:.0f} s)")
    for src, r in rendered.items():
        ex = r.executed
        how = "cached" if ex.cached else f"executed, {ex.cpu_seconds or 0:.1f} s CPU in the kernel"
        lines.append(f"  {src.relative_to(project.root)}: {r.seconds:.1f} s ({how})")
    return project, rendered


@pytest.fixture(scope="session")
def slide_pdfs(course, pytestconfig):
    """Every deck printed to ``slides.pdf`` beside it, as ``coursebuild render`` does after a render:
    {week folder name: (pdf, slides reveal.js counted)}; empty where no browser is installed (the tests
    that need the PDFs then skip, or fail under CI)."""
    from coursebuild.inspect_deck import browser_missing
    from coursebuild.slides_pdf import print_slides

    project, _ = course
    if browser_missing():
        return {}
    start = time.perf_counter()
    decks = {}
    for src in project.sources():
        deck = project.output_dir / src.parent.relative_to(project.root) / "lecture.html"
        if src.name == "lecture.qmd" and deck.exists():
            decks[src.parent.name] = deck
    printed = print_slides(project.output_dir, decks)
    pytestconfig.stash.setdefault(VISUAL_SUMMARY, []).append(
        f"slides.pdf: {len(printed)} decks printed in {time.perf_counter() - start:.1f} s")
    return {w: (pdf, n) for w, (pdf, n, _) in printed.items()}


@pytest.fixture(scope="session")
def visual_summary(pytestconfig):
    """A list of lines printed at the end of the run under 'visual checks'."""
    return pytestconfig.stash.setdefault(VISUAL_SUMMARY, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash.get(VISUAL_SUMMARY, [])
    if lines:
        terminalreporter.section("visual checks")
        for line in lines:
            terminalreporter.write_line(line)


RENDER_MODULES = ("test_build", "test_course", "test_offline_math", "test_preview", "test_visual", "test_visual_gates")


def pytest_collection_modifyitems(config, items):
    """Mark every test that renders (or drives the browser) ``render``: the fast lane skips them."""
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in RENDER_MODULES or "course" in item.fixturenames:
            item.add_marker(pytest.mark.render)
