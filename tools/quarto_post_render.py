"""Quarto's post-render script (``project: post-render:`` in _quarto.yml).

Math with no network on the pages Quarto renders (``coursebuild.render.offline_math``):

* KaTeX goes into ``_site/site_libs/katex/``, where the pages' ``html-math-method`` points (Quarto's
  HTML format otherwise loads KaTeX from a CDN: quarto-cli src/command/render/template.ts);
* MathJax 2.7.9, the release Quarto's decks load from a CDN (src/format/reveal/format-reveal.ts),
  goes into ``_site/site_libs/mathjax/`` and every deck's math plugin is pointed at it (Quarto's
  option schema offers no math option for presentations);
* the course book, every handout in one PDF (``coursebuild.book``), after a render of the whole
  project (``QUARTO_PROJECT_RENDER_ALL``, set by quarto-cli src/command/render/project.ts), its page
  count written into the home page; it executes
  the lectures through the Quarto-free path's cache (``.jupyter_cache``), so under Quarto the
  first book costs one more execution of every lecture;
* the full-text search index (Pagefind) into ``_site/pagefind/`` (``coursebuild.search``).

Quarto runs this after every project render (https://quarto.org/docs/projects/scripts.html).
"""

import os
from pathlib import Path

from coursebuild.book import build_book, note_page_count
from coursebuild.render import Project, offline_math
from coursebuild.search import build_search_index

project = Project.load(Path(__file__).resolve().parents[1])
offline_math(project)
if os.environ.get("QUARTO_PROJECT_RENDER_ALL"):
    note_page_count(project.output_dir, build_book(project).pages)
build_search_index(project.output_dir)
