"""Executing a source's Python cells in a real Jupyter kernel, with a cache.

The cells run once per source, for all its output formats, in a fresh kernel
started by nbclient (the engine Quarto itself drives). The executed notebook
is stored in a jupyter-cache keyed on the code: the cells' source, the
figure settings, and a hash of the course package they import. A prose edit
therefore re-renders without re-running anything; a code edit re-executes.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import re
import shutil
import subprocess
import tempfile

import nbformat
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from .errors import BuildError
from .source import Document

CPU_MARKER = "__coursebuild_cpu__"
EMPTY_MARKER = "__coursebuild_empty_figure__"

SETUP = """\
# Quarto-free build: the figure settings Quarto's Jupyter engine would make
import matplotlib
matplotlib.use("module://matplotlib_inline.backend_inline")
import matplotlib.pyplot as plt
from matplotlib_inline.backend_inline import set_matplotlib_formats
set_matplotlib_formats({fig_format!r})
plt.rcParams["figure.figsize"] = ({fig_width}, {fig_height})
plt.rcParams["svg.hashsalt"] = "coursebuild"  # stable SVG ids (the date comes from SOURCE_DATE_EPOCH)


def _coursebuild_check_figure(_fig):
    # called as a figure is turned into an image: a panel whose data are all
    # NaN (or empty) is a bug, reported at the cell's line
    import numpy as _np
    if True:
        for _ax in _fig.axes:
            _arts = list(_ax.lines) + list(_ax.collections) + list(_ax.images) + list(_ax.patches)
            if not _ax.get_visible() or not _arts:
                continue
            _finite = False
            for _a in _arts:
                try:
                    _points = True  # rows of (x, y): a point is drawn when both are finite
                    if hasattr(_a, "get_xydata"):
                        _d = _a.get_xydata()
                    elif hasattr(_a, "get_offsets") and len(_a.get_offsets()):
                        _d = _a.get_offsets()
                    elif hasattr(_a, "get_array") and _a.get_array() is not None:
                        _d, _points = _a.get_array(), False
                    elif hasattr(_a, "get_paths"):
                        _d = [p.vertices for p in _a.get_paths()]
                        _d = _np.concatenate(_d) if _d else _np.zeros((0, 2))
                    else:
                        _d = _a.get_path().vertices
                    _d = _np.ma.filled(_np.ma.asarray(_d, dtype=float), _np.nan)
                except (TypeError, ValueError):
                    _finite = True  # an artist we cannot read: give it the benefit of the doubt
                    break
                _ok = _np.isfinite(_d)
                if _d.size and (_ok.reshape(len(_d), -1).all(axis=1).any() if _points else _ok.any()):
                    _finite = True
                    break
            if not _finite:
                print("{empty_marker}", repr(_ax.get_title() or _ax.get_ylabel() or "a panel"))


def _coursebuild_checked(_printer):
    def _print(_fig, *args, **kwargs):
        _coursebuild_check_figure(_fig)
        return _printer(_fig, *args, **kwargs)
    return _print


from matplotlib.figure import Figure as _Figure
for _formatter in get_ipython().display_formatter.formatters.values():
    _printer = getattr(_formatter, "type_printers", {{}}).get(_Figure)
    if _printer is not None:
        _formatter.for_type(_Figure, _coursebuild_checked(_printer))
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


def _imported_roots(code: str) -> set[str]:
    """Top-level module names imported by ``code`` (unparsable code imports nothing)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _local_package(name: str, root: Path) -> Path | None:
    """The folder (or file) of module ``name`` when it lives inside the project ``root``."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    origin = Path(spec.origin).resolve()
    if root not in origin.parents:
        return None
    # installed packages are not the project's code, even in a virtual environment
    # inside the project (.venv/lib/.../site-packages)
    inner = origin.relative_to(root).parts
    if any(p in ("site-packages", "dist-packages", "node_modules") or p.startswith(".") for p in inner):
        return None
    return origin.parent if origin.name == "__init__.py" else origin


def code_dependencies(source: Path, code: str, root: Path) -> list[Path]:
    """The Python files a source's cells depend on, found from the paths.

    Those are the ``.py`` files beside the source (its week's experiments
    module), and every package inside the project that the cells or those
    files import (the shared library), found with the import system rather
    than by name. Installed third-party packages are pinned and do not count.
    """
    root = root.resolve()
    files = sorted(p.resolve() for p in source.parent.glob("*.py") if not p.name.startswith("test_"))
    seen: set[str] = set()
    todo = _imported_roots(code) | set().union(*[_imported_roots(f.read_text(encoding="utf-8",
                                                                               errors="replace"))
                                                 for f in files])
    deps = list(files)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        where = _local_package(name, root)
        if where is None:
            continue
        found = sorted(p.resolve() for p in where.rglob("*.py")) if where.is_dir() else [where]
        for f in found:
            if f not in deps:
                deps.append(f)
                todo |= _imported_roots(f.read_text(encoding="utf-8", errors="replace")) - seen
    return deps


def package_hash(files: list[Path], root: Path) -> str:
    """Hash of the Python files the cells depend on (names relative to ``root``, and bytes)."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(os.path.relpath(os.path.abspath(f), os.path.abspath(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _notebook(doc: Document, figure: dict, pkg_hash: str) -> tuple[nbformat.NotebookNode, list[int]]:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells.append(nbformat.v4.new_code_cell(SETUP.format(package_hash=pkg_hash, empty_marker=EMPTY_MARKER,
                                                           **figure)))
    index = []
    for i, cell in enumerate(doc.cells):
        if cell.kind != "code" or cell.options.get("eval", True) is False:
            continue
        nb.cells.append(nbformat.v4.new_code_cell(cell.source))
        index.append(i)
    nb.cells.append(nbformat.v4.new_code_cell(FINISH))
    return nb, index


ANSI = re.compile(r"\x1b\[[0-9;]*m")
CELL_FRAME = re.compile(r"Cell In\[\d+\], line (\d+)")


class IPCKernelManager(AsyncKernelManager):
    """A kernel that talks over Unix sockets in a private folder, not over TCP.

    (ipykernel warns, at every start, that a TCP kernel is unencrypted; IPC
    sockets are reachable only through the file system.)
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("transport", "ipc")
        kwargs.setdefault("ip", os.path.join(tempfile.mkdtemp(prefix="coursebuild-kernel-"), "kernel"))
        super().__init__(**kwargs)


def raise_location(src, traceback: str) -> tuple[Path, int]:
    """The source line of a raise: the failing cell's own frame in the kernel's traceback."""
    m = CELL_FRAME.search(ANSI.sub("", traceback or ""))
    if m:
        return src.code_line(int(m.group(1)))
    return src.path, src.line


def _check_empty_figures(cell, src) -> None:
    for out in cell.get("outputs", []):
        text = out.get("text", "") if out.get("output_type") == "stream" else ""
        if EMPTY_MARKER in text:
            what = text.split(EMPTY_MARKER, 1)[1].strip().splitlines()[0]
            raise BuildError(src.path, src.line, f"a figure panel ({what}) has nothing drawn: "
                                                 "all of its data are NaN or empty")


def source_date_epoch(path: Path) -> int:
    """The date stamped into outputs: ``SOURCE_DATE_EPOCH``, else the source's last commit, else its mtime.

    Unchanged sources then rebuild to identical files (reproducible-builds.org's convention).
    """
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%ct", "--", path.name], cwd=path.parent,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        if out:
            return int(out)
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return int(path.stat().st_mtime)


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
    root: Path,
    style_files: Sequence[Path] = (),
    use_cache: bool = True,
    timeout: int = 900,
) -> Executed:
    """Run the document's cells (or fetch them from the cache).

    Args:
        doc: the parsed source.
        cache_dir: jupyter-cache folder.
        figure: ``fig_format``, ``fig_width``, ``fig_height`` for matplotlib.
        root: the project root; the Python files inside it that the cells
            depend on (``code_dependencies``) are part of the cache key.
        style_files: further files the figures depend on (the project's theme
            files, whose palette the plotting style reads); part of the key.
        use_cache: look up and store executions in the cache.
        timeout: seconds allowed per cell.
    """
    code = "\n".join(c.source for c in doc.cells if c.kind == "code")
    deps = code_dependencies(doc.path, code, root) + [Path(f).resolve() for f in style_files]
    nb, index = _notebook(doc, figure, package_hash(deps, root))
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

    # the kernel's environment, not this process's: no accelerator probing, stable
    # dates in SVG figures (matplotlib reads SOURCE_DATE_EPOCH)
    env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.setdefault("SOURCE_DATE_EPOCH", str(source_date_epoch(doc.path)))
    client = NotebookClient(
        nb,
        kernel_name="python3",
        kernel_manager_class=IPCKernelManager,
        timeout=timeout,
        allow_errors=False,
        resources={"metadata": {"path": str(doc.path.parent)}},
    )
    start = time.perf_counter()
    try:
        with client.setup_kernel(env=env):
            for k, cell in enumerate(nb.cells):
                src = doc.cells[index[k - 1]] if 0 < k <= len(index) else None
                try:
                    client.execute_cell(cell, k)
                except CellTimeoutError:
                    path, line = (src.path, src.line) if src else (doc.path, 1)
                    raise BuildError(path, line, f"cell did not finish within {timeout} s (timeout)") from None
                except DeadKernelError:
                    path, line = (src.path, src.line) if src else (doc.path, 1)
                    raise BuildError(path, line, "the kernel died while running this cell "
                                                 "(out of memory, a crash, or the cell ended the kernel)") from None
                except CellExecutionError as exc:
                    path, line = raise_location(src, getattr(exc, "traceback", "")) if src else (doc.path, 1)
                    ename = getattr(exc, "ename", "Error")
                    evalue = getattr(exc, "evalue", str(exc))
                    raise BuildError(path, line, f"cell raised {ename}: {evalue}") from None
                if src is not None:
                    _check_empty_figures(cell, src)
    finally:
        if client.km is not None:
            shutil.rmtree(Path(client.km.ip).parent, ignore_errors=True)
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
