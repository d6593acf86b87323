"""Full-text search over the built site with Pagefind (https://pagefind.app), offline and static.

Pagefind reads the built HTML (decks with their speaker notes, lab pages, code pages, the ledger
and the home page) and writes a compressed index with its search UI into ``_site/pagefind/``; the
home page's search box loads it from there. Nothing is fetched from a network: the index and the
UI are files beside the pages, so search works on any static host and from a local server
(``python -m http.server -d _site``; browsers refuse ``fetch`` from ``file://`` pages). The binary
comes from PyPI's ``pagefind[bin]`` wheel, pinned in requirements.txt. It runs after either render
path: ``coursebuild render`` and Quarto's post-render script call :func:`build_search_index`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from .errors import BuildError

# the pages a student searches; not site_libs (reveal.js's own HTML) nor the checks' reports
GLOB = "{index.html,ledger.html,lectures/*/{lecture,lab,code}.html}"
# KaTeX's hidden MathML copy would index every formula twice
EXCLUDE = ".katex-mathml, .MJX_Assistive_MathML, .reveal-footer, .slide-number"


def build_search_index(output_dir: Path) -> tuple[int, float]:
    """Index the site in ``output_dir`` into ``output_dir/pagefind``.

    Returns:
        (pages indexed, seconds).

    Raises:
        BuildError: Pagefind is missing or fails (its message, at the output folder).
    """
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pagefind", "--site", str(output_dir), "--glob", GLOB,
           "--exclude-selectors", EXCLUDE, "--output-subdir", "pagefind", "--force-language", "en"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as exc:  # pragma: no cover - sys.executable always exists
        raise BuildError(Path(output_dir), 1, f"cannot run Pagefind: {exc}") from None
    if out.returncode != 0:
        why = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BuildError(Path(output_dir), 1, f"Pagefind failed: {why[0]} (run the set-up command?)")
    m = re.search(r"Indexed (\d+) pages?", out.stdout)
    return (int(m.group(1)) if m else 0), time.perf_counter() - start
