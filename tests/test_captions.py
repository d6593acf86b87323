"""Every lecture figure names the function that made it, linked to the week's code page.

A caption ends ``Code: [`module.fn`](code.qmd#fn).``; ``fn`` must be a top-level
function or class of the week's experiments module, since ``code.qmd`` gives each of
those an anchor with its name (``dlcourse.show.module_page``). Pure text checks: no
render, part of the fast lane.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEEKS = sorted(p for p in (ROOT / "lectures").glob("[0-9][0-9]-*") if (p / "lecture.qmd").exists())
CELL = re.compile(r"^```\{python\}\n(.*?)^```", re.S | re.M)
CAPTION = re.compile(r'^#\| fig-cap: "(.*)"\s*$', re.M)
LINK = re.compile(r"\[`(\w+)\.(\w+)`\]\(code\.qmd#(\w+)\)")


def experiments_module(week: Path) -> Path:
    modules = [p for p in week.glob("*.py") if not p.name.startswith(("test_", "_"))]
    assert len(modules) == 1, f"{week.name}: expected one experiments module, found {modules}"
    return modules[0]


def caption_problems(qmd_text: str, module: str, defined: set[str]) -> list[str]:
    """Problems with the code links of every figure caption in a Quarto source."""
    problems = []
    for cell in CELL.finditer(qmd_text):
        cap = CAPTION.search(cell.group(1))
        if cap is None:
            continue
        label = re.search(r"#\| label: (\S+)", cell.group(1))
        name = label.group(1) if label else "?"
        text = cap.group(1)
        tail = text[text.rfind("Code:"):] if "Code:" in text else ""
        links = LINK.findall(tail)
        if not links or not text.rstrip().endswith("."):
            problems.append(f"{name}: caption does not end with 'Code: [`{module}.fn`](code.qmd#fn).'")
            continue
        for mod, fn, anchor in links:
            if mod != module or fn != anchor:
                problems.append(f"{name}: link [`{mod}.{fn}`](code.qmd#{anchor}) does not match the module {module}")
            elif fn not in defined:
                problems.append(f"{name}: {module}.{fn} is not a top-level function or class of {module}.py")
    return problems


def top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


@pytest.mark.parametrize("week", WEEKS, ids=lambda p: p.name[:2])
def test_every_lecture_figure_links_its_code(week):
    module = experiments_module(week)
    text = (week / "lecture.qmd").read_text(encoding="utf-8")
    assert CAPTION.search(text), f"{week.name}: no figure captions found (the pattern is wrong?)"
    assert caption_problems(text, module.stem, top_level_names(module)) == []


def test_caption_check_rejects_missing_and_dangling_links():
    # Negative control: the same check on captions that are wrong in each way it guards.
    cell = '```{{python}}\n#| label: fig-x\n#| fig-cap: "{cap}"\nplt.show()\n```\n'
    defined = {"plot_risk"}
    good = cell.format(cap="Risk. Code: [`ex.plot_risk`](code.qmd#plot_risk).")
    assert caption_problems(good, "ex", defined) == []
    for cap in ("Risk, no link.",
                "Risk. Code: [`ex.plot_gone`](code.qmd#plot_gone).",
                "Risk. Code: [`other.plot_risk`](code.qmd#plot_risk).",
                "Risk. Code: [`ex.plot_risk`](code.qmd#plot_other)."):
        assert len(caption_problems(cell.format(cap=cap), "ex", defined)) == 1, cap
