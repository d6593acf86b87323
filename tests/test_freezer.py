"""Under Quarto, a change to a lecture's code re-executes it (tools/coursebuild/freezer.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

from coursebuild.freezer import refresh_freezer
from coursebuild.render import Project

FIXTURE = Path(__file__).parent / "fixtures" / "mini"


def freeze(project: Project, rel: str) -> Path:
    """What Quarto leaves after executing a source: _freeze/<folder>/<stem>/execute-results/."""
    frozen = project.root / "_freeze" / Path(rel).parent / Path(rel).stem / "execute-results"
    frozen.mkdir(parents=True, exist_ok=True)
    (frozen / "html.json").write_text("{}")
    return frozen.parent


def test_frozen_results_go_when_the_code_changes_and_stay_after_a_prose_edit(tmp_path):
    root = tmp_path / "mini"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("_site", "_freeze"))
    project = Project.load(root)
    lecture = root / "lectures/01-demo/lecture.qmd"
    module = root / "lectures/01-demo/demo_experiments.py"
    module.write_text("def f(x):\n    return 2 * x\n")
    frozen = freeze(project, "lectures/01-demo/lecture.qmd")
    refresh_freezer(project, [lecture])  # the first run records what the results depend on
    frozen = freeze(project, "lectures/01-demo/lecture.qmd")
    assert refresh_freezer(project, [lecture]) == [] and frozen.exists()
    # prose: Quarto's own freeze decides; nothing of ours changed
    lecture.write_text(lecture.read_text().replace("A callout body.", "A callout body, edited."))
    assert refresh_freezer(project, [lecture]) == [] and frozen.exists()
    # the week's module changed: the frozen results are stale
    module.write_text("def f(x):\n    return 3 * x\n")
    assert refresh_freezer(project, [lecture]) == [lecture] and not frozen.exists()
    # --no-cache: every selected source is executed again
    frozen = freeze(project, "lectures/01-demo/lecture.qmd")
    assert refresh_freezer(project, [lecture], force=True) == [lecture] and not frozen.exists()
