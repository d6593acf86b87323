"""Verified results: a measurement checked against theory while the lecture renders.

Every verified result of a week is one call of :func:`verify` in the lecture's
cells, at lecture size, with the numbers that draw the figure::

    verify("w01-ridge-optimum", claim=r"the ridge risk is smallest at $\\lambda^\\star = \\sigma^2 d / \\norm{\\beta}^2$",
           measured=lam_hat, theory=lam_star, tol=0.02, rule="rel",
           why="grid spacing of the lambda sweep (2 %)", section="sec-ridge")

The call compares the two numbers by ``rule`` and

* emits the record as display data of type :data:`MIME` (nothing is shown on
  the slide or page); the render collects these records from the executed
  notebooks into the course's ledger page, so the ledger always holds the
  numbers the students see;
* raises :class:`VerificationError` when the measurement is outside its
  tolerance, which stops the render at the line of the call: every full-size
  figure checks itself.

The tests check the same statements at small size, with tolerances for that
size, by calling the experiment functions directly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

MIME = "application/vnd.dlcourse.verified+json"
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
    except ImportError:  # pragma: no cover - IPython is a course dependency
        pass
    if not record.passed:
        raise VerificationError(
            f"{id}: measured {record.measured:.6g}, theory {record.theory:.6g}, "
            f"not within {RULES[rule].replace('tol', f'{tol:g}')} ({why})"
        )
    return record
