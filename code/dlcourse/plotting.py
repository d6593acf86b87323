"""The course's house style for figures.

One look for every week: large type that reads from the back of a lecture hall,
a colour-blind-safe palette (Okabe & Ito), thick lines, no chart junk.
Figure *sizes* are not set here: Quarto (and the Quarto-free build) set
matplotlib's ``figure.figsize`` from the format's ``fig-width``/``fig-height``.

Helpers take an ``ax`` and return it; none of them touches pyplot's global state.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import numpy as np

PALETTE_FILE = Path(__file__).resolve().parents[2] / "slides" / "palette.scss"
"""The course's look, defined once (read here, by the deck and page themes and by the handouts)."""


def read_palette(path: Path = PALETTE_FILE) -> dict[str, str]:
    """The ``$course-<name>: #rrggbb;`` colours of the palette file, by name."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: the course palette is missing (dlcourse must be installed editable)") from exc
    colours = dict(re.findall(r"^\$course-([a-z-]+):\s*(#[0-9A-Fa-f]{6})\s*;", text, flags=re.M))
    if not colours:
        raise ValueError(f"{path}: no $course-<name>: #rrggbb; colours found")
    return colours


_COLOURS = read_palette()
# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common forms
# of colour blindness and in greyscale print; yellow last, as it is weak on white.
PALETTE = tuple(_COLOURS[name] for name in ("blue", "vermillion", "green", "purple", "orange", "sky", "black", "yellow"))
THEORY_COLOR = _COLOURS["theory"]
"""Closed-form theory is always drawn in this colour (black), experiments in palette colours."""

STYLE = {
    "font.size": 16,
    "axes.titlesize": 17,
    "axes.labelsize": 17,
    "xtick.labelsize": 14,
    "ytick.labelsize": 14,
    "legend.fontsize": 14,
    "legend.frameon": False,
    "lines.linewidth": 2.5,
    "lines.markersize": 7,
    "axes.linewidth": 1.2,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.prop_cycle": mpl.cycler(color=PALETTE),
    "mathtext.fontset": "cm",
    "figure.dpi": 110,
    "figure.constrained_layout.use": True,
    "savefig.dpi": 200,
    "pdf.fonttype": 42,  # embed TrueType fonts in PDF output
    "svg.fonttype": "path",  # SVG text as outlines: identical in every viewer
    "image.cmap": "viridis",
}


def use_style() -> None:
    """Apply the course style to matplotlib's rcParams (sizes untouched)."""
    mpl.rcParams.update(STYLE)


def theory_vs_experiment(
    ax,
    x,
    experiment,
    theory=None,
    *,
    x_theory=None,
    err=None,
    label: str = "experiment",
    theory_label: str = "theory",
    color: str | None = None,
    marker: str = "o",
):
    """Experiment as markers (with optional error bars) over theory as a black line.

    Args:
        ax: matplotlib axes to draw on.
        x: abscissae of the measurements.
        experiment: measured values, same length as ``x``.
        theory: closed-form values, on ``x_theory`` (default: on ``x``).
        x_theory: abscissae for the theory curve, e.g. a finer grid.
        err: optional error bars (one standard error) on the measurements.
        label, theory_label: legend entries.
        color: colour of the measurements (default: next in the cycle).
        marker: marker of the measurements.

    Returns:
        The axes.
    """
    x = np.asarray(x)
    if theory is not None:
        xt = x if x_theory is None else np.asarray(x_theory)
        ax.plot(xt, np.asarray(theory), color=THEORY_COLOR, lw=2.0, label=theory_label, zorder=2)
    kwargs = dict(ls="none", marker=marker, label=label, zorder=3)
    if color is not None:
        kwargs["color"] = color
    if err is None:
        ax.plot(x, np.asarray(experiment), **kwargs)
    else:
        ax.errorbar(x, np.asarray(experiment), yerr=np.asarray(err), capsize=3, **kwargs)
    return ax


def loglog_fit_line(ax, x, slope: float, intercept: float, *, label: str | None = None, color=None):
    """Draw the fitted power law ``exp(intercept) * x**slope`` as a dashed line."""
    x = np.asarray(x, dtype=float)
    grid = np.geomspace(x.min(), x.max(), 50)
    ax.plot(grid, np.exp(intercept) * grid**slope, ls="--", lw=1.8, color=color or "0.4", label=label)
    return ax


def plain_log_ticks(ax, axis: str = "y"):
    """Label a logarithmic axis at 1, 2, 5 x 10^k in plain numbers (0.2, 0.5, 1, 2, ...), not 2 x 10^-1.

    Call after ``set_xscale("log")`` / ``set_yscale("log")`` and after plotting; meant for
    axes over at most about four decades (beyond that, the default decade labels read better).
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for name in ("x", "y") if axis == "both" else (axis,):
        target = ax.xaxis if name == "x" else ax.yaxis
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        target.set_minor_formatter(NullFormatter())
    return ax


def label_axes(ax, xlabel: str, ylabel: str, *, title: str | None = None):
    """Name the axes with the text's symbols (mathtext, e.g. ``r"$p/n$"``)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    return ax


def panel_labels(axes: Sequence, *, start: str = "a"):
    """Put (a), (b), ... in the top-left corner of each panel."""
    for i, ax in enumerate(axes):
        ax.text(
            -0.02, 1.02, f"({chr(ord(start) + i)})", transform=ax.transAxes,
            ha="right", va="bottom", fontweight="bold",
        )
    return axes
