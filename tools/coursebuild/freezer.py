"""Keep Quarto's freezer honest: frozen results go when the code behind them changes.

Quarto's ``freeze: auto`` re-executes a source only when the source file itself
changed (quarto-cli src/command/render/freeze.ts); a lecture's figures, though,
are drawn by its week's module and the shared library. This module keys every
frozen result on the same dependencies as the Quarto-free path's cache
(``execute.code_dependencies`` and the theme's palette) and removes the frozen
results of a source whose dependencies changed, so that Quarto executes it again.

Quarto keeps a source's frozen results in ``_freeze/<folder>/<stem>/``
(``freezeResultFile`` and ``asFreezerDir`` in freeze.ts). The dependency hash of
each frozen source is kept beside them in ``_freeze/.coursebuild/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .execute import code_dependencies, package_hash
from .render import Project, _theme_files, resolve
from .source import read_qmd

FREEZE_DIR = "_freeze"


def dependency_hash(project: Project, source: Path) -> str:
    """Hash of what the source's cells depend on beyond their own text."""
    doc = read_qmd(source)
    code = "\n".join(c.source for c in doc.cells if c.kind == "code")
    res = resolve(project, doc)
    style = sorted({project.root / f for o in res.formats.values() for f in _theme_files(o.get("theme"))})
    return package_hash(code_dependencies(source, code, project.root) + style, project.root)


def refresh_freezer(project: Project, sources: list[Path], *, force: bool = False) -> list[Path]:
    """Remove the frozen results of sources whose dependencies changed (all given, with ``force``).

    Returns the sources whose frozen results were removed.
    """
    freezer = project.root / FREEZE_DIR
    stamps = freezer / ".coursebuild"
    dropped = []
    for source in sources:
        rel = source.resolve().relative_to(project.root.resolve())
        frozen = freezer / rel.parent / rel.stem
        stamp = stamps / rel.parent / f"{rel.stem}.deps"
        current = dependency_hash(project, source)
        recorded = stamp.read_text(encoding="utf-8").strip() if stamp.exists() else None
        if frozen.exists() and (force or recorded != current):
            shutil.rmtree(frozen)
            dropped.append(source)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(current + "\n", encoding="utf-8")
    return dropped
