"""Look at rendered reveal.js decks the way a person does: in a real browser.

``inspect_decks`` serves the output folder (``_site/``) on 127.0.0.1, so that
``../../site_libs/`` paths resolve, opens each deck in headless Chromium
(Debian's ``/usr/bin/chromium`` driven by Playwright; no browser is ever
downloaded) and walks every slide through reveal.js's API: ``Reveal.getSlides``
and ``Reveal.getIndices`` list them, ``Reveal.slide(h, v, lastFragment)`` shows
each with all its fragments. On every slide it measures

* overflow: a visible element that reaches more than 2 px past the slide box,
  in reveal.js's unscaled slide coordinates (``Reveal.getComputedSlideSize()``;
  rectangles divided by ``Reveal.getScale()``). Elements inside an ancestor
  that scrolls or clips (``overflow`` not ``visible``: code blocks) do not
  count; the ancestor's own box does. Speaker notes and the fixed footer are
  not slide content;
* math: KaTeX errors (``.katex-error`` for a formula KaTeX cannot parse, and
  the red ``\\name`` it draws for an undefined macro) or MathJax's (``merror``), a
  ``span.math`` neither typeset (MathJax, which Quarto's decks use, is waited
  for), raw ``$$``, ``\\(``, ``\\[``, ``\\frac``, ``\\begin{`` left in the
  text outside code, notes and math;
* an empty slide: no visible text, image or math (e.g. a stray HTML comment
  before the first heading makes pandoc open an untitled slide);
* images: an ``<img>`` that finished loading with ``naturalWidth == 0``, or
  did not finish within a few seconds;
* JavaScript errors (``console.error`` and uncaught exceptions) while the slide
  is shown.

Every request to another host is aborted at once (``page.route``), never
awaited, and reported on the slides whose elements ask for it (or for the
whole deck). Deck-wide it also reports JavaScript errors raised while loading
and local files that failed (HTTP >= 400). Every wait has a
timeout, and a watchdog kills this run's Chromium (by process id) if the whole
inspection exceeds its limit.

It writes one screenshot per slide (``slide-HH-VV.png``, reveal's 0-based
indices: ``deck.html#/HH/VV``), a contact sheet (``contact.png``, problem slides
framed in red) and ``report.json`` into ``out_dir/<name>/``.

Two static checks of HTML (decks, lab pages, the home page) need no browser:
``figure_problems`` (every image sits in a ``<figure>`` with alt text and a
caption) and ``link_problems`` (every relative link resolves to a built file).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote

CHROMIUM = os.environ.get("COURSEBUILD_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # belt and braces with page.route: no host but this machine can even be resolved
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
VIEWPORT = (1280, 720)  # the course's slide size; the measurements do not depend on it
NO_ANIMATION = ("*, *::before, *::after { transition: none !important; animation: none !important; }")

# In-page helpers, installed as window.__inspect.  Geometry is in slide units.
JS = (Path(__file__).with_name("inspect_deck.js")).read_text(encoding="utf-8")
"""The in-page program that measures every slide (its own file, so that it reads as JavaScript)."""


@dataclass
class Slide:
    """One slide as shown with all fragments: its indices, title, screenshot and problems."""

    h: int
    v: int
    title: str
    fragments: int = 0
    png: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"slide {self.h}.{self.v} (#/{self.h}/{self.v}) '{self.title}'"


@dataclass
class DeckReport:
    """What a person would have seen in one deck."""

    name: str
    path: str
    slides: list[Slide] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # deck-wide (loading, remote hosts, missing files)
    remote_requests: list[str] = field(default_factory=list)
    seconds: float = 0.0
    contact_sheet: str | None = None

    @property
    def failures(self) -> list[str]:
        """Every problem, one line each, naming the deck and the slide."""
        out = [f"{self.name}: {p}" for p in self.problems]
        out += [f"{self.name}: {s.where}: {p}" for s in self.slides for p in s.problems]
        return out

    def slide(self, title: str) -> Slide:
        """The first slide whose title starts with ``title``."""
        return next(s for s in self.slides if s.title.startswith(title))


def slide_problems(m: dict) -> list[str]:
    """Turn the in-page measurements of one slide into problem lines."""
    p = ["EMPTY SLIDE: nothing visible on it"] if m["empty"] else []
    for o in m["overflow"]:
        edges = ", ".join(f"{d}px past the {k}" for k, d in o["px"].items())
        p.append(f"OVERFLOW: {o['element']} sticks out of the {m['size'][0]}x{m['size'][1]} slide ({edges})")
    if m["hidden_fragments"]:
        p.append(f"FRAGMENTS: {m['hidden_fragments']} fragments could not be shown")
    p += [f"IMAGE FAILED: {src}" for src in m["broken_images"]]
    p += [f"IMAGE DID NOT LOAD in time: {src}" for src in m["unloaded_images"]]
    p += [f"MATH ERROR (KaTeX): {e}" for e in m["math_errors"]]
    p += [f"MATH NOT TYPESET: {t}" for t in m["math_untypeset"]]
    return p


# ----------------------------------------------------------------------------
# serving and the browser
# ----------------------------------------------------------------------------
class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".svg": "image/svg+xml", ".woff2": "font/woff2"}

    def log_message(self, *args):  # no access log on stderr
        pass


class LocalServer:
    """``root`` served on a free port of 127.0.0.1 from a daemon thread (a context manager)."""

    def __init__(self, root: Path):
        handler = functools.partial(_Quiet, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "LocalServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def _kill_browser(profile: str) -> None:
    """Kill the Chromium this process started with ``profile`` (by pid; nothing else)."""
    import psutil

    for proc in psutil.Process().children(recursive=True):
        try:
            if any(profile in arg for arg in proc.cmdline()):
                proc.kill()
        except psutil.Error:
            pass


def browser_missing() -> str | None:
    """Why the browser checks cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package 'playwright' is missing: run tools/setup.sh"
    if not os.access(CHROMIUM, os.X_OK):
        return (f"no Chromium at {CHROMIUM}: run 'bash tools/setup.sh --test-tools' (Debian/Ubuntu: "
                "apt-get install chromium), or set COURSEBUILD_CHROMIUM to an installed Chrome or Chromium "
                "(macOS: /Applications/Google Chrome.app/Contents/MacOS/Google Chrome)")
    return None


def inspect_decks(root: Path, decks: dict[str, Path], out_dir: Path | None = None, *,
                  timeout: float = 30.0, viewport: tuple[int, int] = VIEWPORT,
                  limit: float | None = None) -> dict[str, DeckReport]:
    """Open every deck in one headless Chromium and check every slide.

    Args:
        root: the folder to serve (the site's output folder, ``_site``); every deck lies under it.
        decks: name (e.g. the week's folder name) -> deck HTML file.
        out_dir: where screenshots go (``out_dir/<name>/``); None for none.
        viewport: the browser window (width, height) in CSS pixels; screenshots have this size.
        timeout: seconds allowed for any one browser operation (loading a deck, starting
            reveal.js, a screenshot); an image may take a sixth of it.
        limit: seconds after which this run's Chromium is killed, whatever it is doing (a
            script that loops forever); default ``2 * timeout`` per deck plus 10 minutes.

    Raises:
        RuntimeError: the browser cannot run here, or the watchdog had to kill it.
    """
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    why = browser_missing()
    if why:
        raise RuntimeError(why)
    root = Path(root).resolve()
    reports: dict[str, DeckReport] = {}
    state = {"deck": None, "slide": None}  # what is being shown, for the event handlers

    with LocalServer(root) as server, tempfile.TemporaryDirectory(prefix="coursebuild-chromium-") as profile:
        origin = server.origin

        def remote(url: str) -> bool:
            return url.split(":", 1)[0] in ("http", "https", "ws", "wss") and not url.startswith(origin + "/")

        def on_remote(route) -> None:  # abort at once, remember it
            rep = reports[state["deck"]]
            if route.request.url not in rep.remote_requests:
                rep.remote_requests.append(route.request.url)
            route.abort("blockedbyclient")

        def record(problem: str) -> None:
            rep = reports[state["deck"]]
            target = next((s for s in rep.slides if (s.h, s.v) == state["slide"]), None)
            (target.problems if target else rep.problems).append(problem)

        def on_console(msg) -> None:  # failed loads are reported from the network events instead
            if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
                record(f"JS CONSOLE ERROR: {msg.text[:300]}")

        def on_response(resp) -> None:
            if resp.status >= 400 and resp.url.startswith(origin) and not resp.url.endswith("/favicon.ico"):
                reports[state["deck"]].problems.append(
                    f"LOCAL FILE FAILED: {resp.url[len(origin):]} (HTTP {resp.status})")

        # never hang: the whole run is bounded, then this run's Chromium is killed
        limit = limit or timeout * 2 * (len(decks) + 1) + 600
        killed = threading.Event()
        watchdog = threading.Timer(limit, lambda: (killed.set(), _kill_browser(profile)))
        watchdog.daemon = True
        watchdog.start()
        try:
            with sync_playwright() as pw:
                ctx = pw.chromium.launch_persistent_context(
                    profile, executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS,
                    viewport={"width": viewport[0], "height": viewport[1]}, device_scale_factor=1)
                ctx.set_default_timeout(timeout * 1000)
                ctx.route(remote, on_remote)
                for name, deck in decks.items():
                    state.update(deck=name, slide=None)
                    reports[name] = DeckReport(name, str(deck))
                    page = ctx.new_page()
                    page.on("console", on_console)
                    page.on("pageerror", lambda e: record(f"JS ERROR: {e.name}: {e.message}"[:300]))
                    page.on("response", on_response)
                    try:
                        _walk(page, origin, root, Path(deck), reports[name], state, out_dir, timeout)
                    except PlaywrightError as exc:
                        if killed.is_set():
                            raise
                        reports[name].problems.append(f"BROWSER: {str(exc).splitlines()[0]}")
                    finally:
                        state["slide"] = None
                        page.close()
                ctx.close()
        except PlaywrightError as exc:
            if killed.is_set():
                raise RuntimeError(f"deck inspection gave up after {limit:.0f} s (Chromium killed)") from exc
            raise
        finally:
            watchdog.cancel()
    return reports


def _walk(page, origin: str, root: Path, deck: Path, rep: DeckReport, state: dict,
          out_dir: Path | None, timeout: float) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    start = time.perf_counter()
    url = f"{origin}/{quote(deck.resolve().relative_to(root).as_posix())}"
    page.goto(url, wait_until="load")
    try:
        page.wait_for_function("() => window.Reveal && Reveal.isReady && Reveal.isReady()",
                               timeout=timeout * 1000)
    except PlaywrightTimeout:
        rep.problems.append("reveal.js did not start (Reveal.isReady() stayed false); slides not checked")
        return
    page.add_style_tag(content=NO_ANIMATION)
    page.evaluate("() => Reveal.configure({transition: 'none', backgroundTransition: 'none', autoSlide: 0})")
    page.evaluate(JS)
    if not page.evaluate("ms => __inspect.typeset(ms)", int(timeout * 1000)):
        rep.problems.append("MathJax did not finish typesetting the deck (not loaded, or a formula it cannot typeset)")
    shots = None
    if out_dir is not None:
        shots = Path(out_dir) / rep.name
        shots.mkdir(parents=True, exist_ok=True)
        for old in shots.glob("slide-*.png"):
            old.unlink()
    for h, v, title in page.evaluate("() => __inspect.slides()"):
        slide = Slide(h, v, title)
        rep.slides.append(slide)
        state["slide"] = (h, v)
        m = page.evaluate("([h, v, ms]) => __inspect.visit(h, v, ms)", [h, v, int(timeout * 1000 / 6)])
        slide.fragments = m["fragments"]
        slide.problems += slide_problems(m)
        if shots is not None:
            slide.png = f"slide-{h:02d}-{v:02d}.png"
            page.screenshot(path=str(shots / slide.png))
    state["slide"] = None
    # a remote request is charged to the slides whose elements ask for it, else to the deck
    used = page.evaluate("urls => __inspect.usedBy(urls)", rep.remote_requests) if rep.remote_requests else {}
    for u in rep.remote_requests:
        users = [s for s in rep.slides if [s.h, s.v] in used.get(u, [])]
        for target in [s.problems for s in users] or [rep.problems]:
            target.append(f"REMOTE REQUEST (aborted): {u}")
    rep.seconds = round(time.perf_counter() - start, 2)
    if shots is not None and rep.slides:
        contact_sheet([(shots / s.png, f"{s.h}.{s.v} {s.title}", bool(s.problems)) for s in rep.slides],
                      shots / "contact.png")
        rep.contact_sheet = str(shots / "contact.png")
        (shots / "report.json").write_text(json.dumps(asdict(rep), indent=1, ensure_ascii=False))


# ----------------------------------------------------------------------------
# pictures
# ----------------------------------------------------------------------------
def contact_sheet(items: list[tuple[Path, str, bool]], path: Path, *, thumb_w: int = 256, cols: int = 5) -> None:
    """Tile ``(png, label, has_problem)`` into one PNG; problem images framed in red."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 12)
    except OSError:
        font = ImageFont.load_default()
    thumbs = []
    for png, _, _ in items:
        with Image.open(png) as im:
            im = im.convert("RGB")
            im.thumbnail((thumb_w, 10 * thumb_w))
            thumbs.append(im)
    th = max(t.height for t in thumbs)
    cols = min(cols, len(items))
    rows, pad, lab = -(-len(items) // cols), 10, 16
    sheet = Image.new("RGB", (cols * (thumb_w + pad) + pad, rows * (th + lab + pad) + pad), "#d4d4d4")
    draw = ImageDraw.Draw(sheet)
    for k, (im, (_, label, bad)) in enumerate(zip(thumbs, items)):
        x, y = pad + (k % cols) * (thumb_w + pad), pad + (k // cols) * (th + lab + pad)
        sheet.paste(im, (x, y))
        draw.rectangle([x - 3, y - 3, x + im.width + 2, y + im.height + 2],
                       outline="#d00000" if bad else "#888888", width=3 if bad else 1)
        draw.text((x, y + th + 2), label[:40], fill="#b00000" if bad else "black", font=font)
    sheet.save(path)


# ----------------------------------------------------------------------------
# figures in HTML (decks and lab pages), statically
# ----------------------------------------------------------------------------
class _Figures(HTMLParser):
    def __init__(self):
        super().__init__()
        self.figures: list[dict] = []  # open and closed <figure>s: {"imgs": [...], "caption": str}
        self.open: list[dict] = []
        self.in_caption = 0
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure":
            self.open.append({"imgs": [], "caption": "", "line": self.getpos()[0]})
        elif tag == "figcaption":
            self.in_caption += 1
        elif tag == "img":
            src = a.get("src") or a.get("data-src") or "?"
            if not self.open:
                self.problems.append(f"line {self.getpos()[0]}: image {src} is not inside a <figure>")
            else:
                self.open[-1]["imgs"].append(src)
            if not (a.get("alt") or "").strip():
                self.problems.append(f"line {self.getpos()[0]}: image {src} has no alt text")

    def handle_endtag(self, tag):
        if tag == "figcaption":
            self.in_caption -= 1
        elif tag == "figure" and self.open:
            fig = self.open.pop()
            if fig["imgs"] and not fig["caption"].strip():
                self.problems.append(f"line {fig['line']}: figure {fig['imgs'][0]} has no caption")

    def handle_data(self, data):
        if self.in_caption and self.open:
            self.open[-1]["caption"] += data


def figure_problems(html: str) -> list[str]:
    """Images not inside a ``<figure>``, without alt text, or whose figure has no ``<figcaption>`` text."""
    p = _Figures()
    p.feed(html)
    p.close()
    return p.problems


# ----------------------------------------------------------------------------
# local links in HTML (home page, decks, lab pages), statically
# ----------------------------------------------------------------------------
class _Links(HTMLParser):
    ATTRS = ("href", "src", "data-src", "data-background-image")

    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in self.ATTRS and v]


def link_problems(html_file: Path) -> list[str]:
    """Relative links and sources of an HTML file that do not resolve to a file on disk."""
    p = _Links()
    p.feed(Path(html_file).read_text(encoding="utf-8"))
    p.close()
    out = []
    for link in dict.fromkeys(p.links):
        if link.startswith(("#", "data:", "mailto:", "javascript:")) or "://" in link or link.startswith("//"):
            continue
        target = unquote(link.split("#", 1)[0].split("?", 1)[0])
        if target and not (Path(html_file).parent / target).exists():
            out.append(f"link does not resolve: {link}")
    return out
