"""``slides.pdf`` beside every deck: the deck printed by headless Chromium in reveal.js's print mode.

Students annotate slides on tablets and course systems want PDFs; Quarto does not make slide
PDFs itself (quarto.org/docs/presentations/revealjs/presenting.html#print-to-pdf describes
printing from a browser with ``?print-pdf``). This does that print, offline, from the served
site: one page per slide (``pdf-max-pages-per-slide: 1``), fragments shown together
(``pdf-separate-fragments: false``, both in ``_quarto.yml``), speaker notes left out (reveal.js's
default ``showNotes: false``), math and figures as on screen. Each PDF is written to a temporary
file and moved into place, so a failed print never leaves half a PDF behind.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .inspect_deck import CHROMIUM, JS, LAUNCH_ARGS, LocalServer, browser_missing

# typesetting must be finished before printing: KaTeX renders at load, MathJax 2 (Quarto's decks)
# typesets after reveal.js starts; inspect_deck.js's typeset() waits for either
READY = """() => new Promise(resolve => {
  if (window.Reveal && Reveal.isReady()) resolve(true); else Reveal.on('ready', () => resolve(true));
})"""


def print_slides(root: Path, decks: dict[str, Path], *, timeout: float = 60.0) -> dict[str, tuple[Path, int, float]]:
    """Print each deck to ``slides.pdf`` in its folder.

    Args:
        root: the site folder to serve (every deck lies under it).
        decks: name -> deck HTML file.
        timeout: seconds allowed for loading and printing one deck.

    Returns:
        name -> (PDF path, number of slides reveal.js reports, seconds).

    Raises:
        RuntimeError: no browser here.
    """
    from playwright.sync_api import sync_playwright

    why = browser_missing()
    if why:
        raise RuntimeError(why)
    root = Path(root).resolve()
    done: dict[str, tuple[Path, int, float]] = {}
    with LocalServer(root) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            for name, deck in decks.items():
                start = time.perf_counter()
                deck = Path(deck).resolve()
                page = browser.new_page()
                page.set_default_timeout(timeout * 1000)
                page.goto(f"{server.origin}/{deck.relative_to(root).as_posix()}?print-pdf", wait_until="load")
                page.evaluate(READY)
                page.evaluate(JS)
                if not page.evaluate("ms => __inspect.typeset(ms)", int(timeout * 1000)):
                    raise RuntimeError(f"{deck}: MathJax did not finish typesetting; not printed")
                page.wait_for_timeout(300)  # reveal.js lays out print pages after 'ready'
                slides = int(page.evaluate("Reveal.getTotalSlides()"))
                target = deck.parent / "slides.pdf"
                fd, tmp = tempfile.mkstemp(prefix=".slides-", suffix=".pdf", dir=deck.parent)
                os.close(fd)
                try:
                    page.pdf(path=tmp, prefer_css_page_size=True, print_background=True)
                    os.replace(tmp, target)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                page.close()
                done[name] = (target, slides, time.perf_counter() - start)
        finally:
            browser.close()
    return done
