"""Check a lab notebook the way a student meets it: downloaded alone, run top to bottom.

* ``structure_problems``: valid nbformat; no stored outputs; the first code
  cell starts with ``# Requirements: jax, optax, matplotlib, numpy``; every
  import in the notebook is from a package named there or from the standard
  library (``import`` statements, parsed; IPython magics are transformed first).
* ``execution_problems``: the notebook runs top to bottom in a fresh kernel
  (nbclient), in an empty temporary folder, so it cannot lean on files of this
  repository.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REQUIREMENTS = re.compile(r"^#\s*Requirements:\s*(.+)$", re.M)
IMPORT_NAME = {"scikit-learn": "sklearn", "pillow": "PIL", "pyyaml": "yaml"}  # distribution -> module


def requirements(nb) -> list[str] | None:
    """The packages the first code cell names, or None when it names none."""
    first = next((c for c in nb.cells if c.cell_type == "code"), None)
    if first is None or not first.source.lstrip().startswith("#"):
        return None
    m = REQUIREMENTS.match(first.source.lstrip())
    if not m:
        return None
    return [re.sub(r"\(.*?\)", "", p).strip().lower() for p in m.group(1).split(",") if p.strip()]


def imports(source: str) -> set[str]:
    """Top-level modules imported by a cell's code (IPython syntax allowed)."""
    from IPython.core.inputtransformer2 import TransformerManager

    tree = ast.parse(TransformerManager().transform_cell(source))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def structure_problems(path: Path) -> list[str]:
    """Validity, stored outputs, the requirements line and the imports of one notebook."""
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # nbformat raises several kinds
        return [f"not a valid notebook: {exc}"]
    out = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    stored = [k for k, c in enumerate(code, 1) if c.get("outputs") or c.get("execution_count")]
    if stored:
        out.append(f"code cells {stored} have stored outputs")
    named = requirements(nb)
    if named is None:
        return out + ["the first code cell does not start with '# Requirements: pkg, pkg, ...'"]
    allowed = {IMPORT_NAME.get(p, p.replace("-", "_")) for p in named} | set(sys.stdlib_module_names)
    for k, cell in enumerate(code, 1):
        try:
            used = imports(cell.source)
        except SyntaxError as exc:
            out.append(f"code cell {k} is not valid Python: {exc.msg} (line {exc.lineno})")
            continue
        for mod in sorted(used - allowed):
            out.append(f"code cell {k} imports {mod!r}, which is neither in the standard library "
                       f"nor named in '# Requirements: {', '.join(named)}'")
    return out


def execution_problems(path: Path, *, timeout: int = 600) -> tuple[list[str], float]:
    """Run the notebook in a fresh kernel in an empty folder; (problems, seconds)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from .execute import IPCKernelManager

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    with tempfile.TemporaryDirectory(prefix="coursebuild-lab-") as folder:
        client = NotebookClient(nb, kernel_name="python3", timeout=timeout, allow_errors=False,
                                kernel_manager_class=IPCKernelManager,  # no "unencrypted TCP" warning
                                resources={"metadata": {"path": folder}})
        try:
            client.execute()
        except CellExecutionError as exc:
            cell = next((k for k, c in enumerate((c for c in nb.cells if c.cell_type == "code"), 1)
                         if any(o.get("output_type") == "error" for o in c.get("outputs", []))), "?")
            return [f"code cell {cell} raised {exc.ename}: {exc.evalue}"], time.perf_counter() - start
        except Exception as exc:  # a cell timed out, the kernel died or did not start
            err = exc if str(exc) or exc.__context__ is None else exc.__context__  # a bare clean-up error hides the cause
            first = (str(err).splitlines() or [""])[0]
            return [f"did not run to the end: {type(err).__name__}: {first}"], time.perf_counter() - start
        finally:
            if client.km is not None:
                shutil.rmtree(Path(client.km.ip).parent, ignore_errors=True)
    return [], time.perf_counter() - start
