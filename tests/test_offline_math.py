"""A deck rendered by Quarto presents its math with no network (issue 9, finding 7).

Quarto's decks load MathJax 2.7.9 from a CDN: its revealjs format sets pandoc's math method to that
URL (quarto-cli src/format/reveal/format-reveal.ts) and its deck template hands pandoc's
``mathjaxurl`` to reveal.js's math plugin (src/resources/formats/revealjs/pandoc/template.html,
which is pandoc's revealjs template patched). Quarto cannot run here, so the deck is made by
pandoc's own revealjs template with the same math method and URL: the same plugin configuration.
The project's post-render step (``offline_math``) must make it typeset every formula in a browser
that can reach no other host; the same deck without that step is the negative control.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pypandoc
import pytest

from _needs import require
from coursebuild.inspect_deck import browser_missing, inspect_decks
from coursebuild.render import _REVEAL_MATHJAX, Project, install_site_libs, offline_math

FIXTURE = Path(__file__).parent / "fixtures" / "mini"
# quarto-cli's default for revealjs (format-reveal.ts, revealjsFormat: html-math-method)
QUARTO_MATHJAX = "https://cdn.jsdelivr.net/npm/mathjax@2.7.9/MathJax.js?config=TeX-AMS_HTML-full"
# the math block of Quarto's deck template as pandoc fills it in (template.html, `math: {...}`)
QUARTO_TEMPLATE_BLOCK = """        math: {
          mathjax: 'https://cdn.jsdelivr.net/npm/mathjax@2.7.9/MathJax.js',
          config: 'TeX-AMS_HTML-full',"""
SLIDES = r"""---
title: Offline math
---

## Inline and display

The loss $L(\theta) = \frac{1}{2}\|y - X\theta\|^2$ is convex.

$$
\Theta(x, x') = \sum_{l=1}^{L} \Sigma^{(l)}(x, x') \prod_{k=l+1}^{L} \dot\Sigma^{(k)}(x, x')
$$

## A second slide

$\mathbb{E}\,[\varepsilon] = 0$ and $\operatorname{Var}\varepsilon = \sigma^2$.
"""


def test_the_localizer_matches_quartos_template():
    """The pattern finds the block Quarto's template writes, and nothing else is needed."""
    assert _REVEAL_MATHJAX.search(QUARTO_TEMPLATE_BLOCK)
    assert not _REVEAL_MATHJAX.search(QUARTO_TEMPLATE_BLOCK.replace("https://cdn.jsdelivr.net/npm", "../x"))


@pytest.fixture(scope="module")
def decks(tmp_path_factory):
    require(browser_missing())
    root = tmp_path_factory.mktemp("offline-math")
    shutil.copytree(FIXTURE, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("_site", ".jupyter_cache"))
    project = Project.load(root)
    install_site_libs(project)
    out = {}
    for name in ("local", "cdn"):
        deck = project.output_dir / "lectures" / name / "lecture.html"
        deck.parent.mkdir(parents=True)
        subprocess.run([pypandoc.get_pandoc_path(), "-f", "markdown", "-t", "revealjs", "-s",
                        f"--mathjax={QUARTO_MATHJAX}", "-V", "revealjs-url=../../site_libs/revealjs",
                        "-o", str(deck)], input=SLIDES, text=True, check=True)
        assert "cdn.jsdelivr.net/npm/mathjax@2.7.9/MathJax.js" in deck.read_text()
        out[name] = deck
    out["cdn"].rename(out["cdn"].with_suffix(".htm"))  # not a page offline_math looks at
    out["cdn"] = out["cdn"].with_suffix(".htm")
    changed = offline_math(project)
    reports = inspect_decks(project.output_dir, {n: d for n, d in out.items()}, timeout=12)
    return changed, out, reports


def test_quarto_deck_typesets_math_offline(decks):
    changed, out, reports = decks
    assert changed == [out["local"]]
    assert "cdn.jsdelivr" not in out["local"].read_text()
    rep = reports["local"]
    assert rep.remote_requests == []
    assert rep.problems == [] and [p for s in rep.slides for p in s.problems] == []
    assert len(rep.slides) == 3  # title slide and the two slides, every formula typeset


def test_negative_control_the_cdn_deck_fails_offline(decks):
    _, _, reports = decks
    rep = reports["cdn"]
    assert any("cdn.jsdelivr.net/npm/mathjax@2.7.9" in u for u in rep.remote_requests)
    assert any("MathJax did not finish" in p for p in rep.problems)
    assert any(p.startswith("MATH NOT TYPESET") for s in rep.slides for p in s.problems), rep.slides
