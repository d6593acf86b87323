"""``python -m coursebuild preview``: the Quarto-free path's ``quarto preview``.

Renders what is out of date (unchanged sources are skipped, cached cells stay cached), serves the
site on ``http://127.0.0.1:PORT/``, watches the sources and what they are made from, re-renders a
source when it changes (or its week's code, the shared library, the options, filters, themes or
bibliography change), and reloads every open page or deck that shows it. A deck reloads on the
slide it showed (reveal.js keeps the slide in the URL's hash). A broken source is reported as
``file:line: message`` and the last good page stays up; fixing it renders it again.

The reload is a few lines of JavaScript added to each HTML page as it is served (not written into
``_site``): it asks ``/__coursebuild/version`` twice a second and reloads when the number of
finished renders it belongs to has grown.
"""

from __future__ import annotations

import functools
import http.server
import threading
import time
from pathlib import Path

from .errors import BuildError
from .inspect_deck import _Quiet  # the site's MIME types, no access log
from .render import Project, install_site_libs, install_static_figures, read_qmd, render_document

RELOAD = b"""<script>/* coursebuild preview: reload when a render has finished */
(function poll(seen) {
  fetch('/__coursebuild/version', {cache: 'no-store'}).then(r => r.text()).then(v => {
    if (seen !== null && v !== seen) { location.reload(); return; }
    setTimeout(() => poll(v), 500);
  }).catch(() => setTimeout(() => poll(seen), 1000));
})(null);
</script>"""
SHARED = ("_quarto.yml", "references.bib", "filters", "slides", "code", "lectures/_macros.qmd", "lectures/_metadata.yml")


class State:
    def __init__(self):
        self.version = 0
        self.lock = threading.Lock()

    def bump(self) -> None:
        with self.lock:
            self.version += 1


def _handler(root: Path, state: State):
    class Handler(_Quiet):
        def _send(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path.startswith("/__coursebuild/version"):
                return self._send(str(state.version).encode(), "text/plain")
            path = Path(self.translate_path(self.path))
            if path.is_dir():
                path = path / "index.html"
            if path.suffix == ".html" and path.is_file():
                html = path.read_bytes()
                at = html.rfind(b"</body>")
                return self._send(html[:at] + RELOAD + html[at:] if at >= 0 else html + RELOAD,
                                  "text/html; charset=utf-8")
            super().do_GET()

    return functools.partial(Handler, directory=str(root))


def _inputs(project: Project, source: Path) -> list[Path]:
    """The files a source is made from, besides the shared ones: its text with its includes and
    its week's Python modules."""
    try:
        files = {ln.path for ln in read_qmd(source).lines}
    except BuildError:
        files = {source}
    return sorted(files | set(source.parent.glob("*.py")))


def _snapshot(paths: list[Path]) -> dict[Path, int]:
    out = {}
    for p in paths:
        for f in ([p] if p.is_file() else sorted(p.rglob("*")) if p.is_dir() else []):
            if f.is_file() and "__pycache__" not in f.parts:
                out[f] = f.stat().st_mtime_ns
    return out


def render_changed(project: Project, sources: list[Path], *, log=print) -> int:
    """Render each source (skipped when up to date); report a broken one and carry on. Returns
    the number of sources that rendered without error."""
    ok = 0
    for src in sources:
        try:
            r = render_document(project, src)
            ok += 1
            if not r.skipped:
                log(f"rendered {src.relative_to(project.root)} in {r.seconds:.1f} s")
        except BuildError as exc:
            try:
                shown = exc.path.relative_to(project.root)
            except ValueError:
                shown = exc.path
            log(f"error: {shown}:{exc.line}: {exc.message}")
    return ok


def preview(project: Project, sources: list[Path], *, port: int = 4242, interval: float = 0.3,
            stop: threading.Event | None = None, log=print) -> None:
    """Serve and re-render until ``stop`` is set (or Ctrl-C)."""
    install_site_libs(project)
    install_static_figures(project)
    state = State()
    render_changed(project, sources, log=log)
    state.bump()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _handler(project.output_dir, state))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    log(f"preview: http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C to stop)")
    shared = [project.root / s for s in SHARED]
    watched = {s: _inputs(project, s) for s in sources}
    before = {s: _snapshot(watched[s]) for s in sources}
    shared_before = _snapshot(shared)
    stop = stop or threading.Event()
    try:
        while not stop.wait(interval):
            shared_now = _snapshot(shared)
            everything = shared_now != shared_before
            shared_before = shared_now
            todo = []
            for s in sources:
                now = _snapshot(watched[s])
                if everything or now != before[s]:
                    todo.append(s)
                before[s] = now
            if todo:
                t0 = time.perf_counter()
                if render_changed(project, todo, log=log):
                    state.bump()
                    log(f"reloaded after {time.perf_counter() - t0:.1f} s")
                for s in todo:  # an edit may add or remove an include
                    watched[s] = _inputs(project, s)
                    before[s] = _snapshot(watched[s])
    except KeyboardInterrupt:
        pass
    finally:
        httpd.shutdown()
        httpd.server_close()
