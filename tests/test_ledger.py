"""The ledger of verified results: records saved by ``verify`` are collected in source order,
a missing record names the call's file and line, and the ledger's table survives the bars that
claims contain (norms, absolute values). Fast: no render; the page itself is checked in
tests/test_course.py on the rendered course."""

from __future__ import annotations

import json
import subprocess

import pypandoc
import pytest

from dlcourse.ledger import CALL, Verified, _cell, collect, holds, ledger_markdown, save

LECTURE = '''---
title: "Week 3 · Demo"
---

## Risk {#sec-risk}

```{python}
verify("w03-first", claim=r"$\\|x\\| = |y|$ exactly", measured=1.0, theory=1.0, tol=0.0,
       why="exact", section="sec-risk")
verify(
    "w03-second", claim="a | in text", measured=2.0, theory=2.05, tol=0.1, rule="abs",
    why="noise | grid", section="sec-risk")
```
'''


def record(id, measured=1.0, theory=1.0, tol=0.0, rule="abs", claim="c", why="w"):
    return Verified(id, claim, measured, theory, tol, rule, why, "sec-risk", holds(measured, theory, tol, rule))


@pytest.fixture
def project(tmp_path):
    (tmp_path / "_quarto.yml").write_text("project:\n  type: default\n")
    src = tmp_path / "lectures" / "03-demo" / "lecture.qmd"
    src.parent.mkdir(parents=True)
    src.write_text(LECTURE)
    return tmp_path, src


def test_calls_are_found_in_source_order(project):
    _, src = project
    assert CALL.findall(src.read_text()) == ["w03-first", "w03-second"]


def test_collect_reads_saved_records_in_order_with_lines(project):
    root, src = project
    save(record("w03-second", claim="a | in text", measured=2.0, theory=2.05, tol=0.1, why="noise | grid"), root)
    save(record("w03-first", claim=r"$\|x\| = |y|$ exactly"), root)
    save(record("w03-removed"), root)  # no source calls it any more: not listed
    rows = collect(root, [src])
    assert [r.record.id for r in rows] == ["w03-first", "w03-second"]
    assert [r.line for r in rows] == [8, 10]  # the lines of the two verify( calls
    assert all(r.record.passed for r in rows)
    assert json.loads((root / "_ledger" / "w03-first.json").read_text())["measured"] == 1.0


def test_a_missing_record_names_file_and_line(project):
    root, src = project
    save(record("w03-first"), root)
    with pytest.raises(FileNotFoundError, match=r"lecture\.qmd:10: no record of w03-second"):
        collect(root, [src])


def _pandoc_table_rows(markdown: str) -> list[list[str]]:
    """The table's body rows as pandoc reads them: the HTML of each cell."""
    html = pypandoc.convert_text(markdown, "html", format="markdown", extra_args=["--mathjax"])
    rows = [row.split("</tr>")[0] for row in html.split("<tr")[2:]]
    return [[c.split("</td>")[0] for c in row.split("<td")[1:]] for row in rows]


def _whole(rows: list[list[str]]) -> bool:
    """Each claim and origin reached pandoc in one piece."""
    (claim1, *_), (claim2, *_) = rows
    return ('class="math inline"' in claim1 and "exactly" in claim1 and "a | in text" in claim2
            and "noise | grid" in claim2)


def test_table_cells_survive_bars_in_claims(project):
    root, src = project
    save(record("w03-first", claim=r"$\|x\| = |y|$ exactly"), root)
    save(record("w03-second", claim="a | in text", measured=2.0, theory=2.05, tol=0.1, why="noise | grid"), root)
    md = ledger_markdown(collect(root, [src]), root)
    rows = _pandoc_table_rows(md)
    assert [len(r) for r in rows] == [6, 6] and _whole(rows)
    assert "[slide](lectures/03-demo/lecture.html#/sec-risk)" in md
    assert "[notes](lectures/03-demo/lecture.pdf#sec-risk)" in md
    assert r"$\Vert{}x\Vert{} = \vert{}y\vert{}$" in _cell(r"$\|x\| = |y|$")


def test_negative_control_unescaped_bars_split_the_row(project):
    """The same table with the claims' bars left alone has rows with too many cells."""
    root, src = project
    save(record("w03-first", claim=r"$\|x\| = |y|$ exactly"), root)
    save(record("w03-second", claim="a | in text", measured=2.0, theory=2.05, tol=0.1, why="noise | grid"), root)
    import dlcourse.ledger as ledger

    md = ledger_markdown(collect(root, [src]), root)
    raw = md.replace(_cell(r"$\|x\| = |y|$ exactly"), r"$\|x\| = |y|$ exactly")
    raw = raw.replace(_cell("a | in text"), "a | in text")
    assert raw != md and ledger is not None
    assert not _whole(_pandoc_table_rows(raw))


def test_a_failing_record_is_marked(project):
    root, src = project
    save(record("w03-first"), root)
    save(record("w03-second", measured=2.5, theory=2.05, tol=0.1), root)
    rows = collect(root, [src])
    assert [r.record.passed for r in rows] == [True, False]
    assert "✗ FAIL" in ledger_markdown(rows, root)


def test_verify_in_a_kernel_saves_its_record(tmp_path):
    """Run verify inside IPython (as in a render's kernel) from a source's folder."""
    (tmp_path / "_quarto.yml").write_text("project:\n  type: default\n")
    week = tmp_path / "lectures" / "03-demo"
    week.mkdir(parents=True)
    code = ("from IPython.testing.globalipapp import start_ipython; ip = start_ipython(); "
            "ip.run_cell('from dlcourse.ledger import verify; verify(\"w03-k\", claim=\"c\", measured=1.0, "
            "theory=1.05, tol=0.1, why=\"w\", section=\"sec-risk\")', store_history=False)")
    import sys

    subprocess.run([sys.executable, "-c", code], cwd=week, check=True, capture_output=True)
    data = json.loads((tmp_path / "_ledger" / "w03-k.json").read_text())
    assert data["measured"] == 1.0 and data["theory"] == 1.05 and data["passed"] is True
