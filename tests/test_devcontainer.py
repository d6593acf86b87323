"""The dev container sets up exactly as the README says, with real Quarto."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUARTO_FEATURE = "ghcr.io/rocker-org/devcontainer-features/quarto-cli:1"


def readme_setup_commands(readme: str) -> list[str]:
    """The set-up lines of the README's command block (the ones that run tools/setup*.sh)."""
    block = re.search(r"^```sh\n(.*?)^```", readme, re.S | re.M).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if "tools/setup" in line]


def container_commands(config: dict) -> list[str]:
    return [c.strip() for c in config["postCreateCommand"].split("&&")]


def test_devcontainer_runs_the_readme_setup_and_has_quarto():
    config = json.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text(encoding="utf-8"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert container_commands(config) == readme_setup_commands(readme)
    assert readme_setup_commands(readme) == ["bash tools/setup.sh", "bash tools/setup_test_tools.sh"]
    assert QUARTO_FEATURE in config["features"]
    # the same Quarto as the GitHub workflow that renders with Quarto
    workflow = (ROOT / ".github" / "workflows" / "quarto.yml").read_text(encoding="utf-8")
    assert config["features"][QUARTO_FEATURE]["version"] in workflow


def test_the_comparison_catches_a_drifted_command():
    # Negative control: a container that set up differently from the README is caught.
    readme = "```sh\nbash tools/setup.sh   # render\nbash tools/setup_test_tools.sh\n```\n"
    drifted = {"postCreateCommand": "bash tools/setup.sh && pip install -r requirements.txt"}
    assert container_commands(drifted) != readme_setup_commands(readme)
