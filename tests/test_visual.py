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

import json
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
    pages += [project.output_dir / "ledger.html"]
    pages += [p for w in WEEKS for p in (out(project, w) / "lecture.html", out(project, w) / "lab.html",
                                         out(project, w) / "code.html") if p.exists()]
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


def chalkboard_session(root: Path, deck: Path, saved: Path) -> dict:
    """Use the lecturer's pen in a browser that can reach no other host: draw on the slide (C),
    open the board (B), save the drawings (the plugin's getData(), what D downloads) to ``saved``,
    reload the deck with ``src:`` pointing at them, and open the speaker view (S)."""
    from playwright.sync_api import sync_playwright

    from coursebuild.inspect_deck import CHROMIUM, LAUNCH_ARGS, LocalServer

    out = {"remote": [], "errors": []}
    with LocalServer(root) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 720})
        ctx.route(lambda u: not u.startswith(server.origin), lambda r: (out["remote"].append(r.request.url), r.abort()))
        page = ctx.new_page()
        page.on("pageerror", lambda e: out["errors"].append(str(e)))
        url = f"{server.origin}/{deck.relative_to(root).as_posix()}"
        page.goto(url + "#/1", wait_until="load")
        page.wait_for_function("() => window.Reveal && Reveal.isReady()")
        out["plugin"] = page.evaluate("() => Reveal.hasPlugin('RevealChalkboard')")
        if out["plugin"]:  # the plugin builds its canvases after reveal.js is ready
            page.wait_for_function("() => document.getElementById('chalkboard')")
        if not out["plugin"]:
            browser.close()
            return out
        page.keyboard.press("c")
        page.mouse.move(400, 300)
        page.mouse.down()
        for k in range(1, 11):
            page.mouse.move(400 + 20 * k, 300 + 10 * k)
        page.mouse.up()
        page.keyboard.press("c")
        data = page.evaluate("() => RevealChalkboard.getData()")
        out["strokes"] = sum(len(s["events"]) for slide in json.loads(data) for s in slide["data"])
        board = "() => getComputedStyle(document.getElementById('chalkboard')).visibility"
        page.keyboard.press("b")
        try:
            page.wait_for_function(f"() => ({board})() === 'visible'", timeout=5000)
        except Exception:
            pass
        out["board_visible"] = page.evaluate(board)
        page.evaluate(f"() => ({board})() === 'visible' && RevealChalkboard.toggleChalkboard()")  # close it
        saved.write_text(data)
        with page.expect_popup(timeout=15000) as popup:
            page.keyboard.press("s")
        view = popup.value
        view.wait_for_selector(".speaker-controls-time", timeout=15000)  # the speaker view started
        out["speaker_view"] = True
        view.close()
        # reload: the same deck told to read the saved drawings (what `chalkboard: src:` writes)
        html = deck.read_text(encoding="utf-8")
        assert html.count("chalkboard: {") == 1
        reloaded = deck.with_name(".chalkboard-reload.html")
        reloaded.write_text(html.replace("chalkboard: {", f'chalkboard: {{"src": "{saved.name}", ', 1))
        page.goto(f"{server.origin}/{reloaded.relative_to(root).as_posix()}#/1", wait_until="load")
        page.wait_for_function("() => window.Reveal && Reveal.isReady()")
        page.wait_for_timeout(1000)
        again = page.evaluate("() => RevealChalkboard.getData()")
        out["reloaded"] = sum(len(s["events"]) for slide in json.loads(again) for s in slide["data"])
        reloaded.unlink()
        browser.close()
    return out


def test_chalkboard_draws_saves_and_reloads_offline(course, tmp_path):
    """The chalkboard (``chalkboard:`` in _quarto.yml) loads in every deck with no network; on the
    week 5 deck a stroke drawn with the pen is saved and comes back on reload, the board opens and
    the speaker view still works. Negative control: a deck rendered without the option has no pen."""
    require(browser_missing())
    project, _ = course
    from coursebuild.render import reveal_chalkboard

    deck = project.output_dir / "lectures" / "05-neural-tangent-kernel" / "lecture.html"
    for w in WEEKS:
        assert "RevealChalkboard," in out(project, w).joinpath("lecture.html").read_text(encoding="utf-8"), w
    saved = deck.with_name(".chalkboard-test.json")
    try:
        s = chalkboard_session(project.output_dir, deck, saved)
    finally:
        saved.unlink(missing_ok=True)
    assert s["remote"] == [] and s["errors"] == [], s
    assert s["plugin"] is True and s["board_visible"] == "visible" and s["speaker_view"]
    assert s["strokes"] > 5 and s["reloaded"] == s["strokes"], s
    # negative control: the same deck without the plugin registered has no pen
    html = deck.read_text(encoding="utf-8")
    plain = deck.with_name(".no-pen.html")
    plain.write_text(html.replace("RevealChalkboard,", ""))
    try:
        assert chalkboard_session(project.output_dir, plain, saved)["plugin"] is False
    finally:
        plain.unlink()
    assert reveal_chalkboard("<head></head>", {}, "x") == "<head></head>"  # no option, nothing added
    assert '"src": "ink.json"' in reveal_chalkboard(
        "<head></head><script>Reveal.initialize({ plugins: [ ] })</script>",
        {"chalkboard": {"src": "ink.json", "buttons": False}}, "lib")
