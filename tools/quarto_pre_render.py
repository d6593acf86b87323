"""Quarto's pre-render script (``project: pre-render:`` in _quarto.yml).

Drops the frozen results of every source about to be rendered whose code changed
(its week's module, the shared library, the palette), so that ``quarto render``
re-executes it as the Quarto-free path does (tools/coursebuild/freezer.py).
Quarto runs ``.py`` scripts with its Python and lists the inputs of the render in
``QUARTO_PROJECT_INPUT_FILES``, one per line (quarto-cli src/command/render/project.ts;
https://quarto.org/docs/projects/scripts.html).
"""

import os
from pathlib import Path

from coursebuild.freezer import refresh_freezer
from coursebuild.render import Project

project = Project.load(Path(__file__).resolve().parents[1])
inputs = [project.root / f for f in os.environ.get("QUARTO_PROJECT_INPUT_FILES", "").splitlines() if f.strip()]
for source in refresh_freezer(project, [p for p in inputs if p.suffix == ".qmd"] or project.sources()):
    print(f"pre-render: {source.relative_to(project.root)}: its code changed, it will be executed again")
