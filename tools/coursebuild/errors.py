"""The one error type of the build: a message anchored at a source file and line."""

from __future__ import annotations

from pathlib import Path


class BuildError(Exception):
    """A broken source: reported as ``path:line: message`` and the build stops."""

    def __init__(self, path: str | Path, line: int, message: str):
        self.path = Path(path)
        self.line = line
        self.message = message
        super().__init__(f"{self.path}:{line}: {message}")
