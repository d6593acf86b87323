"""Verified results: a measurement checked against theory while the lecture renders.

Every verified result of a week is one call of :func:`verify` in the lecture's
cells, at lecture size, with the numbers that draw the figure::

    verify("w01-ridge-optimum", claim=r"the ridge risk is smallest at $\\lambda^\\star = \\sigma^2 d / \\norm{\\beta}^2$",
           measured=lam_hat, theory=lam_star, tol=0.02, rule="rel",
           why="grid spacing of the lambda sweep (2 %)", section="sec-ridge")

The call compares the two numbers by ``rule`` and

* saves the record as ``_ledger/<id>.json`` in the project (the folder holding
  ``_quarto.yml``, found from the kernel's working directory, which both render
  paths set to the source's folder) and emits it as display data of type
  :data:`MIME` (nothing is shown on the slide or page), from which the
  Quarto-free path re-saves it when the cells come from its cache. The ledger
  page (``ledger.qmd``) is built from these files by :func:`collect`, so it
  always holds the numbers that drew the figures the students see;
* raises :class:`VerificationError` when the measurement is outside its
  tolerance, which stops the render at the line of the call: every full-size
  figure checks itself.

The tests check the same statements at small size, with tolerances for that
size, by calling the experiment functions directly.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

MIME = "application/vnd.dlcourse.verified+json"
LEDGER_DIR = "_ledger"  # in the project root; a build product, never committed
# a verified result in a lecture source: verify("w05-...", ...)
CALL = re.compile(r"""\bverify\(\s*["'](w\d\d-[A-Za-z0-9-]+)["']""")
RULES = {
    "abs": "|measured − theory| ≤ tol",
    "rel": "|measured − theory| ≤ tol · |theory|",
    "at_most": "measured ≤ theory + tol",
    "at_least": "measured ≥ theory − tol",
}


class VerificationError(AssertionError):
    """A verified result that no longer holds at lecture size."""


@dataclass(frozen=True)
class Verified:
    """One verified result, as recorded in the ledger.

    Attributes:
        id: stable identifier, ``wNN-short-name``.
        claim: the statement, Markdown with ``$math$`` in the course's macros.
        measured: the value the experiment gives at lecture size.
        theory: the value the closed form (or the bound) predicts.
        tol: the tolerance of ``rule``.
        rule: one of :data:`RULES`.
        why: where the tolerance comes from (Monte Carlo error, a finite-size bound).
        section: the ``#sec-...`` identifier of the lecture section that shows it.
        passed: whether ``measured`` satisfies the rule.
    """

    id: str
    claim: str
    measured: float
    theory: float
    tol: float
    rule: str
    why: str
    section: str
    passed: bool


def holds(measured: float, theory: float, tol: float, rule: str) -> bool:
    """Whether ``measured`` agrees with ``theory`` under ``rule`` (see :data:`RULES`)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")
    if not (math.isfinite(measured) and math.isfinite(theory)):
        return False
    gap = measured - theory
    return {
        "abs": abs(gap) <= tol,
        "rel": abs(gap) <= tol * abs(theory),
        "at_most": gap <= tol,
        "at_least": gap >= -tol,
    }[rule]


def verify(
    id: str,
    *,
    claim: str,
    measured: float,
    theory: float,
    tol: float,
    rule: str = "abs",
    why: str,
    section: str,
) -> Verified:
    """Check a measurement against theory, record it, and stop the render if it fails.

    Args:
        id: stable identifier, ``wNN-short-name``.
        claim: the statement being verified (Markdown, ``$math$`` allowed).
        measured: the experiment's value.
        theory: the theory's value.
        tol: tolerance, interpreted by ``rule``.
        rule: ``"abs"``, ``"rel"``, ``"at_most"`` or ``"at_least"`` (see :data:`RULES`).
        why: the origin of the tolerance, in a few words.
        section: identifier of the lecture section that shows the result (``sec-...``).

    Returns:
        The record (its fields can be quoted in the text, so slide and ledger agree).

    Raises:
        VerificationError: the measurement is outside its tolerance.
    """
    record = Verified(id, claim, float(measured), float(theory), float(tol), rule, why,
                      section.removeprefix("#"), holds(float(measured), float(theory), float(tol), rule))
    try:  # outside a Jupyter kernel (tests, scripts) there is nothing to display
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display({MIME: asdict(record)}, raw=True)
            root = project_root(Path.cwd())
            if root is not None:
                save(record, root)
    except ImportError:  # pragma: no cover - IPython is a course dependency
        pass
    if not record.passed:
        raise VerificationError(
            f"{id}: measured {record.measured:.6g}, theory {record.theory:.6g}, "
            f"not within {RULES[rule].replace('tol', f'{tol:g}')} ({why})"
        )
    return record


def project_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` that holds ``_quarto.yml``."""
    for folder in (start, *start.parents):
        if (folder / "_quarto.yml").exists():
            return folder
    return None


def save(record: Verified | dict, root: Path) -> Path:
    """Write one record to ``root/_ledger/<id>.json`` (atomically: a reader never sees half a file)."""
    data = asdict(record) if isinstance(record, Verified) else dict(record)
    folder = Path(root) / LEDGER_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"{data['id']}.json"
    tmp = folder / f".{data['id']}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class Row:
    """A ledger row: the record and where it lives (source file, line of the call)."""

    record: Verified
    source: Path
    line: int


def collect(root: Path, sources: list[Path]) -> list[Row]:
    """The records of every ``verify("id", ...)`` call in ``sources``, in source order.

    Raises:
        FileNotFoundError: a call has no saved record (its source has not been rendered), naming
            ``file:line`` of the call; records of ids no source calls any more are ignored.
    """
    names = {f.name for f in fields(Verified)}
    rows = []
    for src in sources:
        text = Path(src).read_text(encoding="utf-8")
        for m in CALL.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            path = Path(root) / LEDGER_DIR / f"{m.group(1)}.json"
            if not path.exists():
                raise FileNotFoundError(f"{src}:{line}: no record of {m.group(1)}: render this lecture first")
            data = json.loads(path.read_text(encoding="utf-8"))
            rows.append(Row(Verified(**{k: data[k] for k in names}), Path(src), line))
    return rows


def _cell(text: str) -> str:
    """Markdown for a pipe-table cell: a bar inside math becomes ``\\vert{}`` (``\\|`` becomes ``\\Vert{}``),
    a bar in text is escaped, so that no bar splits the cell."""
    parts = text.split("$")
    for k, part in enumerate(parts):
        if k % 2:  # math
            parts[k] = part.replace(r"\|", r"\Vert{}").replace("|", r"\vert{}")
        else:  # a bar would split the cell; an @ would be read as a citation or cross-reference
            parts[k] = part.replace("|", r"\|").replace("@", r"\@")
    return "$".join(parts).replace("\n", " ")


def _number(x: float) -> str:
    return f"{x:.4g}" if x == x else "nan"


def tolerance(record: Verified) -> str:
    """The rule with its tolerance written in, e.g. ``|m − t| ≤ 0.02·|t|``."""
    t = _number(record.tol)
    if record.tol == 0:
        return {"abs": "$m = t$", "rel": "$m = t$", "at_most": "$m \\le t$", "at_least": "$m \\ge t$"}[record.rule]
    return {
        "abs": f"$\\vert m - t\\vert \\le {t}$",
        "rel": f"$\\vert m - t\\vert \\le {t}\\,\\vert t\\vert$",
        "at_most": f"$m \\le t + {t}$",
        "at_least": f"$m \\ge t - {t}$",
    }[record.rule]


def ledger_markdown(rows: list[Row], root: Path) -> str:
    """The ledger as Markdown: one table per week, each row with the claim, theory value ``t``,
    measured value ``m``, the tolerance and its origin, pass or fail, and links to the slide
    (``lecture.html#/sec-...``) and the handout section (``lecture.pdf#sec-...``, Typst's named
    destination for the heading's label)."""
    out = []
    week = None
    for row in rows:
        folder = row.source.parent.relative_to(root).as_posix()
        if folder != week:
            week = folder
            n = sum(1 for r in rows if r.source.parent == row.source.parent)
            title = _front_title(row.source)
            out += ["", f"## {title} {{#{row.source.parent.name}}}", "",
                    f"{n} verified results · [slides]({folder}/lecture.html) · [notes]({folder}/lecture.pdf) · "
                    f"[lab]({folder}/lab.html)", "",
                    "| Result, and where its tolerance comes from | Theory $t$ | Measured $m$ | Tolerance | | See |",
                    # relative widths from the dashes (pandoc pipe tables): the claim gets half
                    "|:------------------------------|------:|------:|:--------|:----:|:-----|"]
        r = row.record
        status = "✓ pass" if r.passed else "✗ FAIL"
        out.append(f"| {_cell(r.claim)} <br>[{_cell(r.why)}]{{.ledger-why}} [`{r.id}`]{{.ledger-id}} "
                   f"| {_number(r.theory)} | {_number(r.measured)} | {tolerance(r)} | {status} | "
                   f"[slide]({folder}/lecture.html#/{r.section}), [notes]({folder}/lecture.pdf#{r.section}) |")
    return "\n".join(out) + "\n"


def _front_title(source: Path) -> str:
    text = source.read_text(encoding="utf-8")
    m = re.search(r'^title:\s*"?(.*?)"?\s*$', text, re.M)
    return m.group(1) if m else source.parent.name
