"""Quarto's post-render script (``project: post-render:`` in _quarto.yml).

Puts KaTeX into ``_site/site_libs/katex/``, where the pages' ``html-math-method``
points, so that the lab pages typeset math with no network (Quarto's HTML format
otherwise loads KaTeX from a CDN: quarto-cli src/command/render/template.ts).
"""

from pathlib import Path

from coursebuild.render import Project, install_katex

install_katex(Project.load(Path(__file__).resolve().parents[1]))
