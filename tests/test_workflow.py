"""The GitHub Actions workflow that renders with real Quarto is valid.

It cannot run here (no Quarto, no network); it is parsed and validated against
the GitHub workflow schema that check-jsonschema ships (SchemaStore's
github-workflow.json, vendored: nothing is downloaded), and its commands are the
repository's own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(path)], capture_output=True, text=True)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_schema(path):
    res = validate(path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_schema_rejects_a_broken_workflow(tmp_path):
    # negative control: the same workflow with one job missing its runs-on
    text = (ROOT / ".github/workflows/quarto.yml").read_text()
    broken = text.replace("    runs-on: ubuntu-24.04\n    timeout-minutes: 60\n", "    timeout-minutes: 60\n", 1)
    assert broken != text
    bad = tmp_path / "broken.yml"
    bad.write_text(broken)
    assert validate(bad).returncode != 0


def test_workflow_renders_with_pinned_quarto_and_checks_its_output():
    wf = yaml.safe_load((ROOT / ".github/workflows/quarto.yml").read_text())
    steps = wf["jobs"]["render"]["steps"]
    quarto = [s for s in steps if s.get("uses", "").startswith("quarto-dev/quarto-actions/setup@")]
    assert quarto and quarto[0]["with"]["version"][0].isdigit(), "Quarto must be pinned to a release"
    runs = " ".join(s.get("run", "") for s in steps)
    assert "tools/setup.sh" in runs and "coursebuild render --quarto" in runs and "coursebuild inspect" in runs
