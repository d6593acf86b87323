"""Executing a source's Python cells in a real Jupyter kernel, with a cache.

The cells run once per source, for all its output formats, in a fresh kernel
started by nbclient (the engine Quarto itself drives). The executed notebook
is stored in a jupyter-cache keyed on the code: the cells' source, the
figure settings, and a hash of the course package they import. A prose edit
therefore re-renders without re-running anything; a code edit re-executes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from .errors import BuildError
from .source import Document

CPU_MARKER = "__coursebuild_cpu__"

SETUP = """\
# Quarto-free build: the figure settings Quarto's Jupyter engine would make
import matplotlib
matplotlib.use("module://matplotlib_inline.backend_inline")
import matplotlib.pyplot as plt
from matplotlib_inline.backend_inline import set_matplotlib_formats
set_matplotlib_formats({fig_format!r})
plt.rcParams["figure.figsize"] = ({fig_width}, {fig_height})
# course package sources: {package_hash}
"""

FINISH = f"""\
import resource as _r
_u = _r.getrusage(_r.RUSAGE_SELF)
print("{CPU_MARKER}", _u.ru_utime + _u.ru_stime)
"""


@dataclass
class Executed:
    """Outputs per code cell (index into ``Document.cells``), and costs."""

    outputs: dict[int, list]
    cached: bool
    wall_seconds: float
    cpu_seconds: float | None


WEEK_MODULE = re.compile(r"^week\d\d\.py$")


def package_hash(package_dirs: list[Path], code: str = "") -> str:
    """Hash of the course package as the cells see it.

    Shared modules always count; a week's own module (``weekNN.py``) counts
    only for the sources whose code names it, so editing week 5's
    experiments does not re-execute week 1.
    """
    h = hashlib.sha256()
    for d in package_dirs:
        for f in sorted(Path(d).rglob("*.py")):
            if WEEK_MODULE.match(f.name) and f.stem not in code:
                continue
            h.update(str(f.relative_to(d)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _notebook(doc: Document, figure: dict, pkg_hash: str) -> tuple[nbformat.NotebookNode, list[int]]:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_code_cell(SETUP.format(package_hash=pkg_hash, **figure)))
    index = []
    for i, cell in enumerate(doc.cells):
        if cell.kind != "code" or cell.options.get("eval", True) is False:
            continue
        nb.cells.append(nbformat.v4.new_code_cell(cell.source))
        index.append(i)
    nb.cells.append(nbformat.v4.new_code_cell(FINISH))
    return nb, index


def _cpu_seconds(nb) -> float | None:
    for out in nb.cells[-1].get("outputs", []):
        text = out.get("text", "")
        if CPU_MARKER in text:
            return float(text.split()[-1])
    return None


def execute(
    doc: Document,
    *,
    cache_dir: Path,
    figure: dict,
    package_dirs: list[Path],
    use_cache: bool = True,
    timeout: int = 900,
) -> Executed:
    """Run the document's cells (or fetch them from the cache).

    Args:
        doc: the parsed source.
        cache_dir: jupyter-cache folder.
        figure: ``fig_format``, ``fig_width``, ``fig_height`` for matplotlib.
        package_dirs: folders of the Python packages the cells import; their
            hash is part of the cache key.
        use_cache: look up and store executions in the cache.
        timeout: seconds allowed per cell.
    """
    code = "\n".join(c.source for c in doc.cells if c.kind == "code")
    nb, index = _notebook(doc, figure, package_hash(package_dirs, code))
    if len(index) == 0:
        return Executed({}, cached=True, wall_seconds=0.0, cpu_seconds=0.0)
    cache = get_cache(str(cache_dir)) if use_cache else None
    if cache is not None:
        try:
            record = cache.match_cache_notebook(nb)
        except KeyError:
            record = None
        if record is not None:
            done = cache.get_cache_bundle(record.pk).nb
            outputs = {i: done.cells[k + 1].get("outputs", []) for k, i in enumerate(index)}
            data = record.data or {}
            return Executed(outputs, True, data.get("wall", 0.0), data.get("cpu"))

    env_before = os.environ.get("JAX_PLATFORMS")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # no accelerator probing in the kernel
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=timeout,
        allow_errors=False,
        resources={"metadata": {"path": str(doc.path.parent)}},
    )
    start = time.perf_counter()
    try:
        with client.setup_kernel():
            for k, cell in enumerate(nb.cells):
                try:
                    client.execute_cell(cell, k)
                except CellExecutionError as exc:
                    src = doc.cells[index[k - 1]] if 0 < k <= len(index) else None
                    where = (src.path, src.line) if src else (doc.path, 1)
                    ename = getattr(exc, "ename", "Error")
                    evalue = getattr(exc, "evalue", str(exc))
                    raise BuildError(where[0], where[1], f"cell raised {ename}: {evalue}") from None
    finally:
        if env_before is None:
            os.environ.pop("JAX_PLATFORMS", None)
    wall = time.perf_counter() - start
    cpu = _cpu_seconds(nb)
    if cache is not None:
        for cell in nb.cells:  # nbclient's timestamps would change the cache key
            cell.metadata = {}
        try:
            cache.cache_notebook_bundle(
                CacheBundleIn(nb, uri=str(doc.path), data={"wall": wall, "cpu": cpu}),
                check_validity=False,
                overwrite=True,
            )
        except FileExistsError:
            pass  # a concurrent render of the same source stored the same execution
    outputs = {i: nb.cells[k + 1].get("outputs", []) for k, i in enumerate(index)}
    return Executed(outputs, False, wall, cpu)


def dump_outputs(executed: Executed) -> str:
    """Outputs as JSON (for debugging)."""
    return json.dumps({str(k): v for k, v in executed.outputs.items()}, indent=1)
