"""``python -m coursebuild render [PATH ...]``: render the course, with Quarto when it is installed.

PATH may be a week's folder (``lectures/01-statistical-learning``) or a source
file; without PATH the whole project is rendered. Progress is printed per
week, then where the outputs went. Exit status 1 on a broken source, with the
message ``file:line: problem``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .errors import BuildError
from .freezer import refresh_freezer
from .render import Project, install_site_libs, install_static_figures, render_document



def under_ci() -> bool:
    """``CI`` set to anything but empty, 0, false or no (as GitHub Actions and .ci/run do)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")

def _select(project: Project, paths: list[str]) -> list[Path]:
    sources = project.sources()
    if not paths:
        return sources
    chosen = []
    for p in paths:
        target = Path(p).resolve()
        hits = [s for s in sources if s == target or target in s.parents]
        if not hits:
            raise BuildError(target, 1, "not a source of this project (see project: render: in _quarto.yml)")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def _group(project: Project, sources: list[Path]) -> list[tuple[str, list[Path]]]:
    groups: dict[str, list[Path]] = {}
    for s in sources:
        groups.setdefault(str(s.parent.relative_to(project.root)) or ".", []).append(s)
    return list(groups.items())


def render_without_quarto(project: Project, paths: list[str], *, use_cache: bool) -> int:
    start = time.perf_counter()
    install_site_libs(project)
    install_static_figures(project)
    sources = _select(project, paths)
    groups = _group(project, sources)
    total_cpu = 0.0
    for n, (folder, files) in enumerate(groups, start=1):
        notes = []
        for f in files:
            r = render_document(project, f, use_cache=use_cache)
            ex = r.executed
            how = "cached" if ex.cached else f"executed in {ex.wall_seconds:.1f} s, {ex.cpu_seconds or 0:.1f} s CPU"
            how += ", outputs up to date" if r.skipped else ""
            if not ex.cached:
                total_cpu += ex.cpu_seconds or 0.0
            kinds = ", ".join(o.suffix.lstrip(".") for o in r.outputs)
            notes.append(f"{f.name} ({how}; {kinds}; {r.seconds:.1f} s)")
        print(f"[{n}/{len(groups)}] {folder}: " + " | ".join(notes), flush=True)
    elapsed = time.perf_counter() - start
    out = os.path.relpath(project.output_dir)
    home = f" (home page: {out}/index.html)" if (project.output_dir / "index.html").exists() else ""
    print(f"done in {elapsed:.1f} s ({total_cpu:.1f} s CPU in kernels); outputs in {out}/{home}")
    return 0


def slide_pdfs(project: Project, paths: list[str]) -> int:
    """``slides.pdf`` beside every rendered deck that is newer than its PDF (``slides_pdf``).

    Runs after either render path; without a browser it says so and carries on (a render
    needs no browser), under CI that is an error."""
    from .inspect_deck import browser_missing
    from .slides_pdf import print_slides

    decks = {}
    for src in _select(project, paths):
        if src.name != "lecture.qmd":
            continue
        deck = project.output_dir / src.parent.relative_to(project.root) / "lecture.html"
        pdf = deck.parent / "slides.pdf"
        if deck.exists() and (not pdf.exists() or pdf.stat().st_mtime < deck.stat().st_mtime):
            decks[src.parent.name] = deck
    if not decks:
        return 0
    why = browser_missing()
    if why:
        print(f"slides.pdf skipped: {why}")
        return 1 if under_ci() else 0
    for name, (pdf, slides, seconds) in print_slides(project.output_dir, decks).items():
        print(f"{os.path.relpath(pdf)}: {slides} slides printed in {seconds:.1f} s", flush=True)
    return 0


def course_book(project: Project, *, use_cache: bool = True) -> int:
    """The course book (``coursebuild.book``): every handout in one PDF; its page count on the home page."""
    from .book import build_book, note_page_count

    book = build_book(project, use_cache=use_cache)
    note_page_count(project.output_dir, book.pages)
    print(f"course book: {os.path.relpath(book.pdf)}, {len(book.weeks)} weeks, {book.pages} pages, "
          f"built in {book.seconds:.1f} s", flush=True)
    return 0


def search_index(project: Project) -> int:
    """The site's full-text search index (``coursebuild.search``), rebuilt after a render."""
    from .search import build_search_index

    if not (project.output_dir / "index.html").exists():
        return 0
    pages, seconds = build_search_index(project.output_dir)
    print(f"search: {pages} pages indexed in {seconds:.1f} s ({os.path.relpath(project.output_dir)}/pagefind/)")
    return 0


def check_weeks(project: Project, paths: list[str], *, use_cache: bool, render: bool = True) -> int:
    """Render the given weeks (unless ``render`` is false: then check what is in the output
    folder, e.g. Quarto's output), then run the deck, handout and notebook checks on them."""
    from .inspect_deck import browser_missing, figure_problems, inspect_decks
    from .inspect_notebook import execution_problems, structure_problems
    from .inspect_pdf import inspect_pdf, tools_missing

    if render:
        render_without_quarto(project, paths, use_cache=use_cache)
        slide_pdfs(project, paths)
    folders = sorted({s.parent for s in _select(project, paths)
                      if (s.parent / "lecture.qmd").exists() or (s.parent / "lab.qmd").exists()})
    checks = project.output_dir / "checks"
    problems: list[str] = []
    decks = {}
    for folder in folders:
        rel = folder.relative_to(project.root)
        out = project.output_dir / rel
        if (out / "lecture.html").exists():
            decks[folder.name] = out / "lecture.html"
        for page in ("lecture.html", "lab.html"):
            if (out / page).exists():
                problems += [f"{rel}/{page}: {q}" for q in figure_problems((out / page).read_text(encoding="utf-8"))]
        if (out / "lecture.pdf").exists():
            if tools_missing():
                print(f"handout checks skipped: {tools_missing()}")
                if under_ci():  # CI must never pass without the checks
                    problems.append(f"{rel}/lecture.pdf: not checked under CI: {tools_missing()}")
            else:
                rep = inspect_pdf(out / "lecture.pdf", checks / folder.name / "handout")
                print(f"{rel}/lecture.pdf: {len(rep.pages)} pages; contact sheet in "
                      f"{os.path.relpath(checks / folder.name / 'handout')}")
                problems += [f"{rel}/lecture.pdf: {f}" for f in rep.failures]
        if (out / "lab.ipynb").exists():
            found = structure_problems(out / "lab.ipynb")
            ran, seconds = execution_problems(out / "lab.ipynb")
            print(f"{rel}/lab.ipynb: ran in a fresh kernel in {seconds:.1f} s")
            problems += [f"{rel}/lab.ipynb: {q}" for q in found + ran]
    if decks:
        if browser_missing():
            print(f"deck checks skipped: {browser_missing()}")
            if under_ci():
                problems.append(f"decks not checked under CI: {browser_missing()}")
        else:
            for name, rep in inspect_decks(project.output_dir, decks, checks).items():
                print(f"{name}/lecture.html: {len(rep.slides)} slides; screenshots and contact sheet in "
                      f"{os.path.relpath(checks / name)}")
                problems += [f"{name}/lecture.html: {f}" for f in rep.failures]
    for q in problems:
        print("problem:", q)
    print(f"{len(problems)} problems")
    return 1 if problems else 0


def quarto_environment() -> dict[str, str]:
    """The environment for Quarto: this Python (the project's virtual environment) for the
    Jupyter engine, and its ``bin`` first on PATH. Quarto takes its Python from
    ``QUARTO_PYTHON``, else ``python3`` on PATH, and never looks for a ``.venv``
    (quarto-cli src/core/jupyter/capabilities.ts)."""
    env = dict(os.environ)
    env["QUARTO_PYTHON"] = sys.executable
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def render_with_quarto(project: Project, quarto: str, paths: list[str], *, use_cache: bool) -> int:
    """``quarto render`` with the project's Python; stale frozen results are dropped first.

    Quarto's ``freeze: auto`` re-executes a source only when the source itself changed, and
    ``--cache-refresh`` does not bypass the freezer (quarto-cli src/command/render/freeze.ts).
    So the frozen results of every source whose code dependencies changed (the week's
    module, the shared library, the palette) are removed before Quarto runs, and with
    ``--no-cache`` those of every selected source (``freezer.refresh_freezer``; the
    project's pre-render script does the same for a plain ``quarto render``).
    """
    sources = _select(project, paths)
    dropped = refresh_freezer(project, sources, force=not use_cache)
    if dropped:
        print(f"re-executing {len(dropped)} sources whose code changed: "
              + ", ".join(str(d.relative_to(project.root)) for d in dropped), flush=True)
    print(f"rendering with {quarto}", flush=True)
    cmd = [quarto, "render", *paths]
    if not use_cache:
        cmd.append("--cache-refresh")
    status = subprocess.call(cmd, cwd=project.root, env=quarto_environment())
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coursebuild", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render the course or some of its weeks")
    r.add_argument("paths", nargs="*", help="week folders or sources (default: everything)")
    r.add_argument("--project", default=".", help="project root (default: .)")
    engine = r.add_mutually_exclusive_group()
    engine.add_argument("--quarto-free", action="store_true",
                        help="use the Quarto-free path even when quarto is on PATH")
    engine.add_argument("--quarto", action="store_true", help="require Quarto")
    r.add_argument("--no-cache", action="store_true", help="re-execute every source")
    c = sub.add_parser("check", help="render weeks (Quarto-free) and run the deck, handout and notebook checks")
    c.add_argument("paths", nargs="+", help="week folders or sources")
    c.add_argument("--project", default=".", help="project root (default: .)")
    c.add_argument("--no-cache", action="store_true", help="re-execute every source")
    v = sub.add_parser("preview", help="serve the site on localhost, re-render what changes and reload the browser")
    v.add_argument("paths", nargs="*", help="week folders or sources to watch (default: all)")
    v.add_argument("--project", default=".", help="project root (default: .)")
    v.add_argument("--port", type=int, default=4242, help="port on 127.0.0.1 (default: 4242)")
    i = sub.add_parser("inspect", help="run the deck, handout and notebook checks on what is already rendered "
                                       "(e.g. by quarto render), without rendering")
    i.add_argument("paths", nargs="*", help="week folders (default: every week)")
    i.add_argument("--project", default=".", help="project root (default: .)")
    args = parser.parse_args(argv)

    try:
        project = Project.load(args.project)
        if args.command == "check":
            return check_weeks(project, args.paths, use_cache=not args.no_cache)
        if args.command == "inspect":
            return check_weeks(project, args.paths, use_cache=True, render=False)
        if args.command == "preview":
            from .preview import preview

            preview(project, _select(project, args.paths), port=args.port)
            return 0
        beside = Path(sys.executable).parent / "quarto"  # quarto-cli installed into the venv
        quarto = shutil.which("quarto") or (str(beside) if beside.exists() else None)
        if args.quarto and not quarto:
            print("coursebuild: --quarto given but quarto is not on PATH", file=sys.stderr)
            return 2
        quarto_used = bool(quarto and not args.quarto_free)
        if quarto_used:
            status = render_with_quarto(project, quarto, args.paths, use_cache=not args.no_cache)
        else:
            status = render_without_quarto(project, args.paths, use_cache=not args.no_cache)
        # Quarto makes no slide PDFs: the same step follows both paths. The course book (after a
        # render of the whole course) and the search index: here on the Quarto-free path, by
        # Quarto's post-render script (tools/quarto_post_render.py) under Quarto
        if quarto_used:
            return status or slide_pdfs(project, args.paths)
        if not status and not args.paths:
            status = course_book(project, use_cache=not args.no_cache)
        return status or slide_pdfs(project, args.paths) or search_index(project)
    except BuildError as exc:
        try:
            shown = exc.path.relative_to(Path(args.project).resolve())
        except ValueError:
            shown = exc.path
        print(f"error: {shown}:{exc.line}: {exc.message}", file=sys.stderr)
        return 1
