"""Make JAX strict for the whole test suite (equinox's tests do the same)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_debug_key_reuse", True)


@pytest.fixture
def key():
    """A fresh key per test: tests never share randomness."""
    return jax.random.key(0)


# ----------------------------------------------------------------------------
# The rendered course, shared by tests/test_course.py and tests/test_visual.py,
# and a terminal summary of the visual checks (slides, pages, seconds per week).
# ----------------------------------------------------------------------------
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from coursebuild.render import Project, install_site_libs, install_static_figures, render_document  # noqa: E402

VISUAL_SUMMARY = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def course(pytestconfig):
    """The whole project rendered through the Quarto-free path (cached cells are not re-run)."""
    project = Project.load(Path(__file__).resolve().parents[1])
    install_site_libs(project)
    install_static_figures(project)
    rendered = {}
    start = time.perf_counter()
    for src in project.sources():
        rendered[src] = render_document(project, src)
    lines = pytestconfig.stash.setdefault(VISUAL_SUMMARY, [])
    lines.append(f"course rendered in {time.perf_counter() - start:.0f} s")
    for src, r in rendered.items():
        ex = r.executed
        how = "cached" if ex.cached else f"executed, {ex.cpu_seconds or 0:.1f} s CPU in the kernel"
        lines.append(f"  {src.relative_to(project.root)}: {r.seconds:.1f} s ({how})")
    return project, rendered


@pytest.fixture(scope="session")
def visual_summary(pytestconfig):
    """A list of lines printed at the end of the run under 'visual checks'."""
    return pytestconfig.stash.setdefault(VISUAL_SUMMARY, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash.get(VISUAL_SUMMARY, [])
    if lines:
        terminalreporter.section("visual checks")
        for line in lines:
            terminalreporter.write_line(line)
