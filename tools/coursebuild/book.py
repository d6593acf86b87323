"""The course book: every week's handout in one PDF, built by Typst from the same sources.

Each lecture's cells come from the execution cache (one execution serves the deck, the handout
and the book), its Markdown is assembled for Typst exactly as for its handout, and the weeks are
put together as chapters (``book.lua``): a title page, one table of contents across the weeks,
chapters numbered by week, equations and figures numbered within chapters ((8.3) is equation 3
of week 8), and one bibliography, formatted by citeproc with the course's references.

Labels are made unique across weeks (``@sec-ridge`` in week 1 becomes ``@sec-w01-ridge``) so
that every cross-reference still points inside its own week; the macros of
``lectures/_macros.qmd`` are stated once. The PDF is written atomically to
``_site/course-book.pdf`` after a render of the whole course, on both paths (``coursebuild
render``; Quarto's post-render script), and its page count is written into the home page's link.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .render import (Figures, Project, assemble, compile_typst, execute_document, fix_typst_symbols,
                     inputs_fingerprint, pandoc_args, resolve, run_pandoc, _metadata_file, _swap_into_place)
from .source import Document, read_qmd

HERE = Path(__file__).resolve().parent
BOOK_FILTER = HERE / "book.lua"
NAME = "course-book.pdf"
# cross-reference kinds whose labels get a week prefix (Quarto's crossref prefixes)
KINDS = ("sec", "fig", "eq", "tbl", "thm", "lem", "cor", "def", "exm", "exr", "prp")
LABEL = re.compile(r"(?<=[#@])(" + "|".join(KINDS) + r")-(?=[A-Za-z0-9])")
MACROS = re.compile(r"^\\(?:re)?newcommand[^\n]*\n?", re.M)  # a definition per line (lectures/_macros.qmd)


@dataclass
class Book:
    pdf: Path
    pages: int
    weeks: list[str]
    seconds: float


def relabel(markdown: str, week: str) -> str:
    """``#sec-x`` / ``@fig-y`` -> ``#sec-wNN-x`` / ``@fig-wNN-y``: labels unique across the book."""
    return LABEL.sub(lambda m: f"{m.group(1)}-w{week}-", markdown)


def build_book(project: Project, *, use_cache: bool = True) -> Book:
    """Build ``_site/course-book.pdf`` from every week's ``lecture.qmd``.

    Raises:
        BuildError: a source that does not build (its file and line), as for a handout.
    """
    start = time.perf_counter()
    lectures = sorted(project.root.glob("lectures/[0-9][0-9]-*/lecture.qmd"))
    project.output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-book-", dir=project.output_dir))
    try:
        parts, lines, opts, meta, fingerprints = [], [], None, None, []
        for src in lectures:
            doc = read_qmd(src)
            res = resolve(project, doc)
            executed = execute_document(project, doc, res, use_cache=use_cache)
            week = src.parent.name[:2]
            fmt_opts = {**res.execute, **res.formats["typst"]}
            fmt_opts.setdefault("filters", res.meta.get("filters") or [])  # as render_document does
            figures = Figures(staging / f"w{week}" / "figure", f"w{week}/figure")
            md = relabel(MACROS.sub("", assemble(doc, executed, "typst", fmt_opts, figures)), week)
            title = str(res.meta.get("title", src.parent.name)).split("·")[-1].strip().replace('"', "'")
            parts.append(f'::: {{.book-chapter week="{int(week)}" title="{title}"}}\n\n{md}\n\n:::\n')
            lines += doc.lines
            fingerprints.append(inputs_fingerprint(project, doc, res, executed))
            opts = opts or fmt_opts
            meta = meta or res.meta
        if not parts:
            raise FileNotFoundError("no lectures/NN-*/lecture.qmd to make a book of")
        macros = (project.root / "lectures" / "_macros.qmd").read_text(encoding="utf-8")
        course = meta.get("course") or {}
        book_meta = {k: v for k, v in meta.items() if k not in ("title", "description", "subtitle")}
        book_meta["title"] = course.get("title", "Course book")
        book_meta["subtitle"] = f"Lecture notes, weeks {int(lectures[0].parent.name[:2])}–{int(lectures[-1].parent.name[:2])}"
        opts = {**opts, "toc": True, "toc-depth": 2, "number-sections": True}
        meta_file = _metadata_file(book_meta, "typst", staging, project)
        args = ["--lua-filter", str(BOOK_FILTER)] + pandoc_args("typst", opts, project, staging, meta_file)
        whole = Document(project.root / "lectures", book_meta, [], lines)
        text = macros + "\n\n" + "\n".join(parts)
        # unchanged text, figures, options and tools: the book on disk is this book
        final, stamp = project.output_dir / NAME, project.output_dir / f".{NAME}.inputs"
        h = hashlib.sha256(text.encode() + json.dumps([book_meta, opts], sort_keys=True, default=str).encode())
        for f in sorted(staging.rglob("*")) + [BOOK_FILTER, Path(__file__)]:
            if f.is_file():
                h.update(f.read_bytes())
        h.update("".join(fingerprints).encode())
        if use_cache and final.exists() and stamp.exists() and stamp.read_text() == h.hexdigest():
            return Book(final, _page_count(final), [s.parent.name for s in lectures], time.perf_counter() - start)
        typ_text = fix_typst_symbols(run_pandoc(whole, text, args, staging))
        # equations numbered within chapters (book.lua's preamble defines course-eq-numbering)
        typ_text = typ_text.replace('numbering: "(1)"', "numbering: course-eq-numbering")
        typ = staging / "course-book.typ"
        typ.write_text(typ_text, encoding="utf-8")
        figures_dir = project.root / "figures"
        if figures_dir.exists():
            shutil.copytree(figures_dir, staging / "figures")
        pdf = staging / NAME
        compile_typst(whole, typ, pdf, root=staging)
        pages = _page_count(pdf)
        _swap_into_place(pdf, final)
        stamp.write_text(h.hexdigest())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Book(project.output_dir / NAME, pages, [s.parent.name for s in lectures], time.perf_counter() - start)


def _page_count(pdf: Path) -> int:
    """Pages of a PDF Typst wrote: the ``/Count`` of its page tree's root."""
    data = pdf.read_bytes()
    counts = [int(c) for c in re.findall(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)", data)]
    counts += [int(c) for c in re.findall(rb"/Count\s+(\d+)[^>]*?/Type\s*/Pages\b", data)]
    if not counts:
        raise ValueError(f"{pdf}: no page tree found")
    return max(counts)


# the link text as pandoc writes it (it may wrap lines between words)
BOOK_LINK = re.compile(r"(>Course\s+book\s+\(PDF)(?:,\s+\d+\s+pages)?(\)<)")


def note_page_count(output_dir: Path, pages: int) -> bool:
    """Write the book's page count into the home page's link ("Course book (PDF, N pages)").

    The home page renders before the book exists on either path (Quarto renders every page, then
    runs the post-render script that builds the book), so the count is filled in afterwards."""
    index = Path(output_dir) / "index.html"
    if not index.exists():
        return False
    html = index.read_text(encoding="utf-8")
    new, n = BOOK_LINK.subn(lambda m: f"{m.group(1)}, {pages} pages{m.group(2)}", html)
    if n:
        tmp = index.with_name(f".index.html.{os.getpid()}.tmp")
        tmp.write_text(new, encoding="utf-8")
        os.replace(tmp, index)
    return bool(n)
