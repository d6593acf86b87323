"""Reading a Quarto source: front matter, includes, cells and their `#|` options.

Every line keeps its origin (file and line number), so any later error can be
reported as ``path:line: message``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import BuildError

INCLUDE = re.compile(r"^\s*\{\{<\s*include\s+(\S+)\s*>\}\}\s*$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*(.*)$")
CELL_INFO = re.compile(r"^\{(\w+)([^}]*)\}\s*$")


class _QuartoLoader(yaml.SafeLoader):
    """YAML 1.2-ish scalars as Quarto reads them: yes/no and dates stay strings."""


for _first, _resolvers in list(_QuartoLoader.yaml_implicit_resolvers.items()):
    _QuartoLoader.yaml_implicit_resolvers[_first] = [
        (tag, rx) for tag, rx in _resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
    ]
_QuartoLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str, path: Path, first_line: int) -> dict:
    """Parse YAML, reporting errors at ``path:line`` (``first_line`` = line of the text's start)."""
    try:
        data = yaml.load(text, Loader=_QuartoLoader)  # noqa: S506 (SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = first_line + (mark.line if mark else 0)
        raise BuildError(path, line, f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise BuildError(path, first_line, f"invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BuildError(path, first_line, "YAML must be a mapping")
    return data


@dataclass
class Line:
    text: str
    path: Path
    lineno: int


@dataclass
class Cell:
    """A markdown chunk or a code cell, with the origin of its first line."""

    kind: str  # "markdown" or "code"
    source: str
    path: Path
    line: int
    options: dict = field(default_factory=dict)
    origins: list[Line] = field(default_factory=list)

    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def code_line(self, k: int) -> tuple[Path, int]:
        """File and line of the ``k``-th line (1-based) of a code cell's source."""
        n_code = len(self.source.splitlines())
        first = len(self.origins) - 1 - n_code  # after the opening fence and the #| options
        if self.kind == "code" and 1 <= k <= n_code and 0 < first < len(self.origins):
            origin = self.origins[first + k - 1]
            return origin.path, origin.lineno
        return self.path, self.line


@dataclass
class Document:
    path: Path
    meta: dict
    cells: list[Cell]
    lines: list[Line]

    def locate(self, needle: str) -> tuple[Path, int]:
        """First source line containing ``needle`` (for pandoc messages)."""
        for ln in self.lines:
            if needle in ln.text:
                return ln.path, ln.lineno
        return self.path, 1


def _expand_includes(path: Path, seen: tuple[Path, ...] = ()) -> list[Line]:
    if path in seen:
        raise BuildError(seen[-1], 1, f"include cycle through {path}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BuildError(path, 1, "file not found") from None
    try:
        raw = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise BuildError(path, line, f"not UTF-8: byte 0x{data[exc.start]:02x} at column {column}; "
                                     "save the file as UTF-8") from None
    out: list[Line] = []
    for i, text in enumerate(raw, start=1):
        m = INCLUDE.match(text)
        if m:
            target = (path.parent / m.group(1)).resolve()
            if not target.exists():
                raise BuildError(path, i, f"included file not found: {m.group(1)}")
            included = _expand_includes(target, (*seen, path))
            # an included file's front matter is not allowed (Quarto ignores it too)
            out.extend(included)
            continue
        out.append(Line(text, path, i))
    return out


def _split_front_matter(lines: list[Line], path: Path) -> tuple[dict, list[Line]]:
    if not lines or lines[0].text.strip() != "---":
        return {}, lines
    for j in range(1, len(lines)):
        if lines[j].text.strip() in ("---", "..."):
            text = "\n".join(ln.text for ln in lines[1:j])
            meta = load_yaml(text, path, first_line=2)
            return meta, lines[j + 1 :]
    raise BuildError(path, 1, "front matter starting with '---' is never closed")


def _parse_options(body: list[Line], path: Path) -> tuple[dict, list[Line]]:
    opt_lines = []
    k = 0
    while k < len(body) and body[k].text.startswith("#|"):
        opt_lines.append(body[k])
        k += 1
    if not opt_lines:
        return {}, body
    text = "\n".join(ln.text[2:].removeprefix(" ") for ln in opt_lines)
    options = load_yaml(text, path, first_line=opt_lines[0].lineno)
    return options, body[k:]


def read_qmd(path: str | Path) -> Document:
    """Read a ``.qmd`` file into front matter and a list of markdown/code cells."""
    path = Path(path).resolve()
    lines = _expand_includes(path)
    meta, body = _split_front_matter(lines, path)
    cells: list[Cell] = []
    md: list[Line] = []

    def flush_md():
        if md and any(ln.text.strip() for ln in md):
            cells.append(Cell("markdown", "\n".join(ln.text for ln in md), md[0].path, md[0].lineno, origins=list(md)))
        md.clear()

    i = 0
    while i < len(body):
        ln = body[i]
        m = FENCE.match(ln.text)
        if not m:
            md.append(ln)
            i += 1
            continue
        indent, fence, info = m.groups()
        # find the closing fence of the same kind, at least as long
        j = i + 1
        while j < len(body):
            c = FENCE.match(body[j].text)
            if c and c.group(2)[0] == fence[0] and len(c.group(2)) >= len(fence) and not c.group(3).strip():
                break
            j += 1
        if j == len(body):
            raise BuildError(ln.path, ln.lineno, f"code fence {fence} is never closed")
        cell_info = CELL_INFO.match(info.strip())
        if cell_info and not indent:
            lang = cell_info.group(1)
            if lang != "python":
                raise BuildError(ln.path, ln.lineno, f"only python cells are supported, not {{{lang}}}")
            flush_md()
            options, code = _parse_options(body[i + 1 : j], ln.path)
            cells.append(
                Cell("code", "\n".join(c.text for c in code), ln.path, ln.lineno, options=options,
                     origins=body[i : j + 1])
            )
        else:
            md.extend(body[i : j + 1])
        i = j + 1
    flush_md()
    return Document(path=path, meta=meta, cells=cells, lines=lines)
