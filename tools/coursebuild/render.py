"""The Quarto-free render path: execute, assemble, convert with pandoc, compile Typst.

One source is executed once (for all of its formats), then for each format:
the markdown with the cell outputs goes through pandoc with ``quarto.lua`` and
citeproc, to reveal.js HTML, Typst (compiled to PDF), HTML or ipynb. Every
output of a source is written to a staging folder first and moved into the
output directory only when all formats succeeded: a failed build leaves the
previous outputs untouched.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pypandoc
import typst

from .errors import BuildError
from .execute import Executed, execute, source_date_epoch
from .source import Cell, Document, load_yaml, read_qmd

HERE = Path(__file__).parent
LUA_FILTER = HERE / "quarto.lua"
TEMPLATES = HERE / "templates"
EXTENSIONS = {"revealjs": ".html", "html": ".html", "typst": ".pdf", "ipynb": ".ipynb"}
FORMAT_ORDER = ("revealjs", "typst", "html", "ipynb")


# ----------------------------------------------------------------------------
# project and metadata
# ----------------------------------------------------------------------------
def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _format_dict(value) -> dict:
    """``format:`` may be a name, a list of names, or a mapping name -> options|'default'."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {value: {}}
    if isinstance(value, list):
        return {str(v): {} for v in value}
    return {k: (v if isinstance(v, dict) else {}) for k, v in value.items()}


@dataclass
class Project:
    root: Path
    config: dict
    output_dir: Path
    cache_dir: Path

    @classmethod
    def load(cls, root: str | Path = ".") -> "Project":
        root = Path(root).resolve()
        cfg_path = root / "_quarto.yml"
        if not cfg_path.exists():
            raise BuildError(cfg_path, 1, "no _quarto.yml: not a Quarto project root")
        config = load_yaml(cfg_path.read_text(encoding="utf-8"), cfg_path, 1)
        out = root / config.get("project", {}).get("output-dir", "_site")
        return cls(root, config, out, root / ".jupyter_cache")

    def sources(self) -> list[Path]:
        """The documents listed by ``project: render:`` (globs), in order."""
        patterns = self.config.get("project", {}).get("render") or ["**/*.qmd"]
        found: list[Path] = []
        for pat in patterns:
            for p in sorted(glob.glob(str(self.root / pat), recursive=True)):
                path = Path(p).resolve()
                if any(part.startswith(("_", ".")) for part in path.relative_to(self.root).parts):
                    continue
                if path not in found:
                    found.append(path)
        return found

    def directory_metadata(self, doc_path: Path) -> dict:
        """Merged ``_metadata.yml`` from the project root down to the document's folder."""
        meta: dict = {}
        rel = doc_path.parent.relative_to(self.root)
        folders = [self.root] + [self.root.joinpath(*rel.parts[: i + 1]) for i in range(len(rel.parts))]
        for folder in folders:
            f = folder / "_metadata.yml"
            if f.exists():
                meta = deep_merge(meta, load_yaml(f.read_text(encoding="utf-8"), f, 1))
        return meta

    def output_path(self, doc_path: Path, fmt: str) -> Path:
        rel = doc_path.relative_to(self.root).with_suffix(EXTENSIONS[fmt])
        return self.output_dir / rel


@dataclass
class Resolved:
    """A document's metadata and per-format options after Quarto's merge rules."""

    meta: dict
    formats: dict[str, dict]
    execute: dict


def resolve(project: Project, doc: Document) -> Resolved:
    proj = {k: v for k, v in project.config.items() if k not in ("project", "format", "execute")}
    dirmeta = project.directory_metadata(doc.path)
    meta = deep_merge(deep_merge(proj, {k: v for k, v in dirmeta.items() if k != "format"}),
                      {k: v for k, v in doc.meta.items() if k != "format"})
    proj_formats = _format_dict(project.config.get("format"))
    input_formats = deep_merge(_format_dict(dirmeta.get("format")), _format_dict(doc.meta.get("format")))
    names = list(input_formats) or list(proj_formats)
    for name in names:
        if name not in EXTENSIONS:
            raise BuildError(doc.path, 1, f"format {name!r} is not supported by the Quarto-free build "
                                          f"(supported: {', '.join(EXTENSIONS)})")
    formats = {n: deep_merge(proj_formats.get(n, {}), input_formats.get(n, {})) for n in names}
    exts = [EXTENSIONS[n] for n in names]
    if len(set(exts)) != len(exts):
        raise BuildError(doc.path, 1, "two formats would write the same file (e.g. html and revealjs)")
    execute_opts = deep_merge(project.config.get("execute", {}), doc.meta.get("execute", {}))
    return Resolved(meta, formats, execute_opts)


# ----------------------------------------------------------------------------
# assembling markdown with the cell outputs
# ----------------------------------------------------------------------------
def _attr_quote(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def _fence(text: str, classes: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks} {{{classes}}}\n{text.rstrip()}\n{ticks}\n"


@dataclass
class Figures:
    """Writes image outputs once, shared by all formats of a document."""

    folder: Path  # staging folder of <stem>_files
    rel: str  # path of that folder relative to the document's output
    written: dict[tuple[int, int], str] = field(default_factory=dict)

    def save(self, cell_index: int, k: int, label: str | None, data: dict) -> str:
        if (cell_index, k) in self.written:
            return self.written[(cell_index, k)]
        stem = label or f"cell-{cell_index}"
        if "image/svg+xml" in data:
            name, payload = f"{stem}-{k + 1}.svg", data["image/svg+xml"]
            blob = payload.encode() if isinstance(payload, str) else "".join(payload).encode()
        elif "image/png" in data:
            name, blob = f"{stem}-{k + 1}.png", base64.b64decode(data["image/png"])
        else:
            raise ValueError("no image in output")
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / name).write_bytes(blob)
        self.written[(cell_index, k)] = f"{self.rel}/{name}"
        return self.written[(cell_index, k)]


def _cell_markdown(i: int, cell: Cell, outputs: list, fmt: str, opts: dict, figures: Figures) -> str:
    """Markdown for one code cell in format ``fmt``."""
    o = {**opts, **cell.options}
    if o.get("include", True) is False:
        return ""
    if fmt == "ipynb":
        hidden = ' source_hidden="true"' if o.get("code-fold") else ""
        return f"::: {{.cell .code{hidden}}}\n" + _fence(cell.source, ".python") + ":::\n"
    parts: list[str] = []
    if o.get("echo", True) is True:
        parts.append(_fence(cell.source, ".python .cell-code"))
    output = o.get("output", True)
    if output is False:
        return "\n".join(parts)
    label = o.get("label")
    nfig = 0
    for out in outputs:
        kind = out.get("output_type")
        if kind == "stream":
            if out.get("name") != "stdout":
                continue  # warnings and logs are not part of the page (warning: false)
            text = out.get("text", "")
            parts.append(text if output == "asis" else _fence(text, ".cell-output"))
        elif kind in ("display_data", "execute_result"):
            data = out.get("data", {})
            if "image/svg+xml" in data or "image/png" in data:
                cap, alt = o.get("fig-cap"), o.get("fig-alt")
                if not cap or not alt:
                    missing = " and ".join(n for n, v in (("fig-cap", cap), ("fig-alt", alt)) if not v)
                    raise BuildError(cell.path, cell.line, f"figure without {missing}: every figure needs both")
                path = figures.save(i, nfig, label, data)
                ident = f"#{label} " if label and label.startswith("fig-") and nfig == 0 else ""
                if nfig > 0 and label and label.startswith("fig-"):
                    raise BuildError(cell.path, cell.line,
                                     f"cell {label} draws more than one figure; use subplots in one figure")
                parts.append(f"![{cap}]({path}){{{ident}fig-alt={_attr_quote(alt)}}}\n")
                nfig += 1
            elif "text/markdown" in data:
                parts.append("".join(data["text/markdown"]))
            elif "text/plain" in data and kind == "execute_result":
                text = "".join(data["text/plain"])
                parts.append(text if output == "asis" else _fence(text, ".cell-output"))
        elif kind == "error":
            raise BuildError(cell.path, cell.line, f"cell raised {out.get('ename')}: {out.get('evalue')}")
    return "\n".join(parts)


def assemble(doc: Document, executed: Executed, fmt: str, opts: dict, figures: Figures) -> str:
    chunks = []
    for i, cell in enumerate(doc.cells):
        if cell.kind == "markdown":
            chunks.append(cell.source)
        else:
            chunks.append(_cell_markdown(i, cell, executed.outputs.get(i, []), fmt, opts, figures))
    return "\n\n".join(chunks) + "\n"


# ----------------------------------------------------------------------------
# pandoc
# ----------------------------------------------------------------------------
WARNING = re.compile(r"^\[WARNING\]\s*(.*)$")

# Symbols pandoc 3.9 writes under names that Typst 0.15 renamed.
TYPST_RENAMED = {"dot.circle": "dot.o"}
TYPST_SYMBOL = re.compile(r"\b(" + "|".join(re.escape(k) for k in TYPST_RENAMED) + r")\b(?![.\w])")


def fix_typst_symbols(text: str) -> str:
    return TYPST_SYMBOL.sub(lambda m: TYPST_RENAMED[m.group(1)], text)


def _locate_message(doc: Document, message: str) -> BuildError:
    m = re.search(r"citation (\S+) not found", message)
    if m:
        path, line = doc.locate("@" + m.group(1))
        return BuildError(path, line, f"unknown citation key @{m.group(1)} (not in the bibliography)")
    m = re.search(r"unknown cross-reference @(\S+)", message)
    if m:
        path, line = doc.locate("@" + m.group(1))
        return BuildError(path, line, f"unknown cross-reference @{m.group(1)}")
    m = re.search(r"Could not convert TeX math\s+(.+?), rendering as TeX", message, re.S)
    if m:
        formula = m.group(1).strip()
        needle = formula.splitlines()[0].strip()[:40]
        path, line = doc.locate(needle)
        return BuildError(path, line, f"math that pandoc cannot convert: {formula[:120]}")
    m = re.search(r"cross-reference @(\S+) mixed with citations", message)
    if m:
        path, line = doc.locate("@" + m.group(1))
        return BuildError(path, line, message.strip())
    return BuildError(doc.path, 1, f"pandoc: {message.strip()}")


def run_pandoc(doc: Document, markdown: str, args: list[str], cwd: Path) -> str:
    """Run pandoc; any warning or error becomes a BuildError at the source line."""
    pandoc = pypandoc.get_pandoc_path()
    proc = subprocess.run(
        [pandoc, "-f", "markdown", *args],
        input=markdown.encode(), capture_output=True, cwd=cwd,
    )
    stderr = proc.stderr.decode(errors="replace")
    warnings = []
    current: list[str] = []
    for line in stderr.splitlines():
        w = WARNING.match(line)
        if w:
            if current:
                warnings.append("\n".join(current))
            current = [w.group(1)]
        elif current:
            current.append(line)
    if current:
        warnings.append("\n".join(current))
    if proc.returncode != 0:
        raise _locate_message(doc, stderr)
    if warnings:
        raise _locate_message(doc, warnings[0])
    return proc.stdout.decode()


def _metadata_file(meta: dict, fmt: str, folder: Path, project: Project) -> Path:
    m = {k: v for k, v in meta.items() if k not in ("format", "execute", "bibliography", "filters")}
    m["coursebuild-format"] = fmt
    bib = meta.get("bibliography")
    if bib:
        bibs = [bib] if isinstance(bib, str) else list(bib)
        m["bibliography"] = [str((project.root / b).resolve()) for b in bibs]
    path = folder / f"meta-{fmt}.json"
    path.write_text(json.dumps(m, default=str))
    return path


def _rel(target: Path, start: Path) -> str:
    return os.path.relpath(target, start).replace(os.sep, "/")


def pandoc_args(fmt: str, opts: dict, project: Project, out_dir: Path, meta_file: Path) -> list[str]:
    """Command-line options for pandoc from the format's Quarto options."""
    scratch = meta_file.parent
    libs = _rel(project.output_dir / "site_libs", out_dir)
    # the project's own filters (`filters:`) run first, as under Quarto, where user
    # filters run before Quarto's built-ins (quarto.org/docs/extensions/filters.html);
    # then quarto.lua, the emulation of those built-ins
    user = [a for f in project_filters(project, opts) for a in ("--lua-filter", str(f))]
    common = ["--metadata-file", str(meta_file), *user, "--lua-filter", str(LUA_FILTER), "--citeproc"]
    if fmt == "revealjs":
        args = common + [
            "-t", "revealjs", "-s", "--slide-level", "2",
            "-V", f"revealjs-url={libs}/revealjs",
            f"--katex={libs}/katex/",
            "-V", "theme=white",
            "-V", f"width={opts.get('width', 1050)}",
            "-V", f"height={opts.get('height', 700)}",
            "-V", f"margin={opts.get('margin', 0.1)}",
            "-V", f"center={str(opts.get('center', True)).lower()}",
            "-V", f"transition={opts.get('transition', 'none')}",
            "-V", "hash=true",
            "-V", "navigationMode=linear",
            "-V", "controlsTutorial=false",
        ]
        if opts.get("slide-number"):
            sn = opts["slide-number"]
            args += ["-V", f"slideNumber='{sn}'" if isinstance(sn, str) else "slideNumber=true"]
        css = theme_css_name(opts.get("theme"))
        if css:
            args += ["--css", f"{libs}/course/{css}"]
        if opts.get("footer"):
            footer = scratch / "footer.html"
            footer.write_text(f'<div class="reveal-footer">{opts["footer"]}</div>\n')
            args += ["--include-before-body", str(footer)]
        if opts.get("incremental"):
            args.append("--incremental")
        return args
    if fmt == "typst":
        args = common + ["-t", "typst", "-s", "--resource-path", str(out_dir), "-V", "page-numbering=1"]
        if opts.get("toc"):
            args += ["--toc", "--toc-depth", str(opts.get("toc-depth", 2))]
        if opts.get("number-sections"):
            # Quarto's Typst default numbering is "1.1.a" (quarto-cli src/format/typst/format-typst.ts)
            args += ["-V", f"section-numbering={opts.get('section-numbering', '1.1.a')}"]
        for key in ("papersize", "fontsize", "mainfont"):
            if key in opts:
                args += ["-V", f"{key}={opts[key]}"]
        if isinstance(opts.get("margin"), dict):
            for k, v in opts["margin"].items():
                args += ["-V", f"margin.{k}={v}"]
        return args
    if fmt == "html":
        args = common + ["-t", "html5", "-s", f"--katex={libs}/katex/",
                         "--css", f"{libs}/course/layout.css", "--section-divs"]
        css = theme_css_name(opts.get("theme"))
        if css:
            args += ["--css", f"{libs}/course/{css}"]
        if opts.get("toc"):
            args += ["--toc", "--toc-depth", str(opts.get("toc-depth", 2))]
        return args
    if fmt == "ipynb":
        return common + ["-t", "ipynb"]
    raise ValueError(fmt)


def project_filters(project: Project, opts: dict) -> list[Path]:
    """The Lua filters named under ``filters:`` (project, folder or document), as paths."""
    found = []
    for f in opts.get("filters") or []:
        name = f if isinstance(f, str) else (f.get("path") if isinstance(f, dict) else None)
        if not name or name == "quarto":
            continue
        path = (project.root / name).resolve()
        if not path.exists():
            raise BuildError(project.root / "_quarto.yml", 1, f"filter not found: {name}")
        found.append(path)
    return found


def _theme_files(theme) -> list[str]:
    return [t for t in ([theme] if isinstance(theme, str) else (theme or [])) if str(t).endswith(".scss")]


def theme_css_name(theme) -> str | None:
    """The stylesheet the Quarto-free build compiles from a format's SCSS theme files."""
    files = _theme_files(theme)
    return f"{Path(files[-1]).stem}.css" if files else None


def compile_theme(project: Project, theme) -> str:
    """Compile a Quarto SCSS theme (its files' ``scss:defaults`` sections, then their
    ``scss:rules``, as Quarto joins them) with Dart Sass, the compiler Quarto uses."""
    defaults, rules = [], []
    for name in _theme_files(theme):
        path = project.root / name
        text = path.read_text(encoding="utf-8")
        parts = re.split(r"/\*--\s*scss:(defaults|rules|functions|mixins|uses)\s*--\*/", text)
        for kind, body in zip(parts[1::2], parts[2::2]):
            (defaults if kind in ("defaults", "functions", "mixins", "uses") else rules).append(body)
    sass = _node_bin(project, "sass")
    proc = subprocess.run([str(sass), "--stdin", "--no-source-map", "--style=expanded"],
                          input="\n".join(defaults + rules).encode(), capture_output=True)
    if proc.returncode != 0:
        raise BuildError(project.root / _theme_files(theme)[-1], 1,
                         f"sass: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode()


def _node_modules(project: Project) -> Path:
    nm = project.root / "node_modules"
    return nm if nm.exists() else HERE.parents[1] / "node_modules"  # a project inside the repository (a fixture)


def _node_bin(project: Project, name: str) -> Path:
    exe = _node_modules(project) / ".bin" / name
    if not exe.exists():
        raise BuildError(project.root / "package.json", 1, f"missing {name}: run the set-up command (npm ci)")
    return exe


def reveal_print_options(html: str, opts: dict) -> str:
    """Quarto's reveal.js print options, which pandoc's template lacks, added to ``Reveal.initialize``.

    ``pdf-separate-fragments`` and ``pdf-max-pages-per-slide`` become ``pdfSeparateFragments`` and
    ``pdfMaxPagesPerSlide`` (quarto-cli src/resources/schema/document-reveal-print.yml).
    """
    config = []
    if "pdf-separate-fragments" in opts:
        config.append(f"pdfSeparateFragments: {str(bool(opts['pdf-separate-fragments'])).lower()},")
    if "pdf-max-pages-per-slide" in opts:
        config.append(f"pdfMaxPagesPerSlide: {int(opts['pdf-max-pages-per-slide'])},")
    if not config:
        return html
    anchor = "Reveal.initialize({"
    if html.count(anchor) != 1:
        raise ValueError("the reveal.js template has no single Reveal.initialize({ call")
    return html.replace(anchor, anchor + "\n        " + " ".join(config), 1)


# Quarto's ``chalkboard`` options (quarto-cli src/resources/schema/document-reveal-tools.yml) as the
# plugin's own configuration keys (reveal.js-plugins chalkboard/plugin.js, configure()); Quarto
# turns the kebab-case names into these (src/format/reveal/format-reveal-plugin.ts)
CHALKBOARD_KEYS = {"theme": "theme", "boardmarker-width": "boardmarkerWidth", "chalk-width": "chalkWidth",
                   "src": "src", "read-only": "readOnly", "transition": "transition"}


def reveal_chalkboard(html: str, opts: dict, plugin_url: str) -> str:
    """Quarto's reveal.js chalkboard (``chalkboard:``) on the Quarto-free path: the same plugin
    (rajgoel's reveal.js-plugins, which Quarto bundles: src/resources/formats/revealjs/plugins/
    chalkboard) loaded from ``plugin_url``, configured from the same options, registered with
    reveal.js. ``buttons`` are Quarto's own controls (its support plugin draws them with Font
    Awesome), so they exist only under Quarto; the keys work on both paths: B the board, C the pen
    on the slide, D download the drawings (reloaded with ``src:``), Delete clears."""
    chalk = opts.get("chalkboard")
    if not chalk:
        return html
    chalk = chalk if isinstance(chalk, dict) else {}
    config = {CHALKBOARD_KEYS[k]: v for k, v in chalk.items() if k in CHALKBOARD_KEYS}
    anchor, plugins = "Reveal.initialize({", "plugins: ["
    if html.count(anchor) != 1 or html.count(plugins) != 1 or html.count("</head>") != 1:
        raise ValueError("the reveal.js template has no single Reveal.initialize({ ... plugins: [ call")
    html = html.replace("</head>", f'  <link rel="stylesheet" href="{plugin_url}/style.css">\n</head>', 1)
    html = html.replace(anchor, f'{anchor}\n        chalkboard: {json.dumps(config)},', 1)
    html = html.replace(plugins, f"{plugins}\n          RevealChalkboard,", 1)
    script = f'<script src="{plugin_url}/plugin.js"></script>\n'
    at = html.index(anchor)
    at = html.rindex("<script", 0, at)
    return html[:at] + script + "    " + html[at:]


def _finish_notebook(text: str, title: str | None) -> str:
    nb = nbformat.reads(text, as_version=4)
    if title:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {title}"))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [c for c in nb.cells if c.cell_type != "markdown" or c.source.strip()]
    for i, cell in enumerate(nb.cells):
        # pandoc draws random cell ids; numbered ids make an unchanged source rebuild identically
        cell.id = f"cell-{i}"
        if cell.cell_type == "code":
            hidden = cell.metadata.pop("source_hidden", None)
            if hidden in ("true", True):
                cell.metadata["jupyter"] = {"source_hidden": True}
                cell.metadata["cellView"] = "form"  # Colab's folded cell
            cell.outputs = []
            cell.execution_count = None
    nbformat.validate(nb)
    return nbformat.writes(nb)


TYPST_AT = re.compile(r"(?:┌─|-->)\s*(\S+?):(\d+):(\d+)")


def _typst_error(doc: Document, typ: Path, message: str) -> BuildError:
    """A Typst diagnostic at the source line that produced the offending Typst line.

    Typst reports a line of the generated ``.typ`` file; its text is looked up in the
    source (the longest word run of that line), which finds the Markdown it came from.
    """
    m = TYPST_AT.search(message)
    first = message.strip().splitlines()[0].removeprefix("error: ") if message.strip() else "error"
    if m and typ.exists():
        lines = typ.read_text(encoding="utf-8").splitlines()
        k = int(m.group(2))
        if 1 <= k <= len(lines):
            words = re.findall(r"[A-Za-z][A-Za-z ,.'-]{6,}", lines[k - 1])
            for needle in sorted(words, key=len, reverse=True):
                path, line = doc.locate(needle.strip()[:40])
                if (path, line) != (doc.path, 1):
                    return BuildError(path, line, f"typst: {first} (generated line: {lines[k - 1].strip()[:80]})")
            return BuildError(doc.path, 1, f"typst: {first} (generated line {k}: {lines[k - 1].strip()[:80]})")
    return BuildError(doc.path, 1, f"typst: {first}")


def compile_typst(doc: Document, typ: Path, pdf: Path, root: Path, *, timestamp: int | None = None) -> None:
    try:
        _, warnings = typst.compile_with_warnings(str(typ), output=str(pdf), root=str(root),
                                                  ignore_system_fonts=True, timestamp=timestamp)
    except typst.TypstError as exc:
        # typst-py keeps the location in the rendered diagnostic ("┌─ file.typ:LINE:COL")
        raise _typst_error(doc, typ, getattr(exc, "diagnostic", "") or str(exc)) from None
    if warnings:
        w = warnings[0]
        raise _typst_error(doc, typ, getattr(w, "diagnostic", "") or f"warning: {w}")


# ----------------------------------------------------------------------------
# one document
# ----------------------------------------------------------------------------
@dataclass
class Rendered:
    source: Path
    outputs: list[Path]
    executed: Executed | None
    seconds: float
    skipped: bool = False  # the outputs were up to date (inputs_fingerprint unchanged)


def inputs_fingerprint(project: Project, doc: Document, res: Resolved, executed: Executed) -> str:
    """A hash of everything a document's outputs are made from: its text with its includes, its
    resolved options and metadata, the cell outputs (whatever the cache or the kernel gave), the
    filters, templates, themes and bibliography files, the pandoc and Typst versions, and this
    module. Equal fingerprints give the same outputs, so the pandoc and Typst steps can be skipped."""
    h = hashlib.sha256()
    h.update("\n".join(f"{ln.path}:{ln.text}" for ln in doc.lines).encode())
    h.update(json.dumps([res.meta, res.formats, res.execute], sort_keys=True, default=str).encode())
    h.update(json.dumps(executed.outputs, sort_keys=True, default=str).encode())
    files = [LUA_FILTER, Path(__file__), *sorted(TEMPLATES.glob("*"))]
    files += [project.root / f for f in ("_quarto.yml", "references.bib")]
    for fmt in res.formats.values():
        files += [project.root / f for f in _theme_files(fmt.get("theme"))]
        files += project_filters(project, {**fmt, "filters": res.meta.get("filters") or []})
    files += sorted((project.root / "slides").glob("*")) if (project.root / "slides").is_dir() else []
    for f in dict.fromkeys(files):
        if Path(f).is_file():
            h.update(str(f).encode() + b"\0" + Path(f).read_bytes())
    h.update(f"{pypandoc.get_pandoc_version()} typst-py {getattr(typst, '__version__', '')}".encode())
    return h.hexdigest()


def _swap_into_place(staged: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    if staged.is_dir():
        trash = None
        if final.exists():
            trash = final.with_name(final.name + f".old-{os.getpid()}")
            os.replace(final, trash)
        os.replace(staged, final)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staged, final)


def _save_verified(project: Project, executed: Executed) -> None:
    from dlcourse.ledger import MIME, save

    for outs in executed.outputs.values():
        for out in outs:
            record = out.get("data", {}).get(MIME) if out.get("output_type") == "display_data" else None
            if record:
                save(record, project.root)


def execute_document(project: Project, doc: Document, res: Resolved, *, use_cache: bool = True,
                     timeout: int = 900) -> Executed:
    """The document's cells, executed in a kernel or taken from the cache (one execution serves
    every format, and the course book)."""
    first = next(iter(res.formats.values()), {})
    figure = {
        "fig_format": first.get("fig-format", "svg"),
        "fig_width": float(first.get("fig-width", 10)),
        "fig_height": float(first.get("fig-height", 4.4)),
    }
    return execute(
        doc,
        cache_dir=project.cache_dir,
        figure=figure,
        root=project.root,
        # the figures' colours come from the theme's palette (slides/palette.scss)
        style_files=sorted({project.root / f for o in res.formats.values() for f in _theme_files(o.get("theme"))}),
        timeout=timeout,
        # `freeze: false` (e.g. the home page, whose list of weeks comes from the
        # folders) re-executes at every render, as in Quarto
        use_cache=use_cache and res.execute.get("freeze", "auto") is not False,
    )


def render_document(project: Project, path: Path, *, use_cache: bool = True, timeout: int = 900) -> Rendered:
    start = time.perf_counter()
    doc = read_qmd(path)
    res = resolve(project, doc)
    executed = execute_document(project, doc, res, use_cache=use_cache, timeout=timeout)
    # verified results: the kernel saved them as it ran; cells from the cache re-save theirs
    _save_verified(project, executed)
    final_dir = project.output_path(doc.path, "html").parent
    stem = doc.path.stem
    # nothing that goes into the outputs changed since they were written: keep them
    stamp = final_dir / f".{stem}.inputs"
    fingerprint = inputs_fingerprint(project, doc, res, executed)
    expected = [final_dir / (stem + EXTENSIONS[f]) for f in FORMAT_ORDER if f in res.formats]
    if use_cache and stamp.exists() and stamp.read_text() == fingerprint and all(o.exists() for o in expected):
        return Rendered(doc.path, expected, executed, time.perf_counter() - start, skipped=True)
    project.output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{stem}-", dir=project.output_dir))
    try:
        # the staging folder stands in for the document's output folder
        stage_dir = staging / final_dir.relative_to(project.output_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        figures = Figures(stage_dir / f"{stem}_files" / "figure", f"{stem}_files/figure")
        produced: list[str] = []
        for fmt in FORMAT_ORDER:
            if fmt not in res.formats:
                continue
            opts = {**res.execute, **res.formats[fmt]}
            opts.setdefault("filters", res.meta.get("filters") or [])
            md = assemble(doc, executed, fmt, opts, figures)
            meta_file = _metadata_file(res.meta, fmt, staging, project)
            # pandoc resolves relative links against the real output folder
            args = pandoc_args(fmt, opts, project, final_dir, meta_file)
            out_name = stem + EXTENSIONS[fmt]
            if fmt == "typst":
                typ = stage_dir / f".{stem}.typ"
                typ.write_text(fix_typst_symbols(run_pandoc(doc, md, args, stage_dir)))
                static = project.root / "figures"
                if static.exists() and not (staging / "figures").exists():
                    shutil.copytree(static, staging / "figures")  # `../../figures/x.svg` resolves
                compile_typst(doc, typ, stage_dir / out_name, root=staging,
                              timestamp=source_date_epoch(doc.path))
                typ.unlink()
            elif fmt == "ipynb":
                (stage_dir / out_name).write_text(_finish_notebook(run_pandoc(doc, md, args, stage_dir),
                                                                  res.meta.get("title")))
            elif fmt == "revealjs":
                chalkboard = _rel(project.output_dir / "site_libs" / "revealjs" / "plugin" / "chalkboard", final_dir)
                html = reveal_print_options(run_pandoc(doc, md, args, stage_dir), opts)
                (stage_dir / out_name).write_text(reveal_chalkboard(html, opts, chalkboard))
            else:
                (stage_dir / out_name).write_text(run_pandoc(doc, md, args, stage_dir))
            produced.append(out_name)
        # every format succeeded: move the outputs into place
        outputs = []
        if (stage_dir / f"{stem}_files").exists():
            _swap_into_place(stage_dir / f"{stem}_files", final_dir / f"{stem}_files")
        for name in produced:
            _swap_into_place(stage_dir / name, final_dir / name)
            outputs.append(final_dir / name)
        _write_atomic(stamp, fingerprint)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Rendered(doc.path, outputs, executed, time.perf_counter() - start)


# ----------------------------------------------------------------------------
# shared assets
# ----------------------------------------------------------------------------
def _copy_tree(src: Path, dst: Path) -> None:
    if not src.exists():
        raise BuildError(src, 1, "missing front-end assets: run the set-up command (npm ci)")
    shutil.copytree(src, dst, dirs_exist_ok=True)


def install_site_libs(project: Project) -> None:
    """reveal.js 5 and KaTeX from node_modules; the course's stylesheets compiled from its SCSS themes."""
    libs = project.output_dir / "site_libs"
    nm = _node_modules(project)
    stamp = libs / ".stamp"
    formats = _format_dict(project.config.get("format"))
    themes = [formats[f].get("theme") for f in ("revealjs", "html") if f in formats]
    sources = [nm / "reveal.js" / "package.json", nm / "katex" / "package.json", nm / "sass" / "package.json",
               nm / "reveal.js-plugins" / "package.json"]
    sources += [project.root / f for th in themes for f in _theme_files(th)] + sorted(TEMPLATES.glob("*.css"))
    key = json.dumps([[str(p), p.stat().st_mtime_ns] for p in sources if p.exists()])
    if stamp.exists() and stamp.read_text() == key:
        return
    for part in ("dist", "plugin"):
        _copy_tree(nm / "reveal.js" / part, libs / "revealjs" / part)
    # the chalkboard (tools/setup.sh installs it from its pinned tarball)
    _copy_tree(nm / "reveal.js-plugins" / "chalkboard", libs / "revealjs" / "plugin" / "chalkboard")
    install_katex(project)
    course = libs / "course"
    course.mkdir(parents=True, exist_ok=True)
    for theme in themes:
        name = theme_css_name(theme)
        if name:
            _write_atomic(course / name, compile_theme(project, theme))
    for css in TEMPLATES.glob("*.css"):
        shutil.copy2(css, course / css.name)
    stamp.write_text(key)


def install_katex(project: Project) -> None:
    """KaTeX (from node_modules) in ``site_libs/katex/``, where the pages' math method points, so
    that math renders with no network (the HTML format's ``html-math-method`` url in _quarto.yml)."""
    nm = _node_modules(project)
    katex = project.output_dir / "site_libs" / "katex"
    katex.mkdir(parents=True, exist_ok=True)
    for f in ("katex.min.js", "katex.min.css"):
        shutil.copy2(nm / "katex" / "dist" / f, katex / f)
    _copy_tree(nm / "katex" / "dist" / "fonts", katex / "fonts")


# MathJax 2 for the decks Quarto renders. Quarto's revealjs format sets pandoc's math method to
# MathJax 2.7.9 from a CDN (quarto-cli src/format/reveal/format-reveal.ts, revealjsFormat(): the
# html-math-method default), and its deck template hands that URL to reveal.js's math plugin
# (src/resources/formats/revealjs/pandoc/template.html: ``math: { mathjax: '$mathjaxurl$', ...}``).
# Quarto's option schema tags html-math-method for HTML documents only (document-options.yml), so
# the project cannot set it for decks; the post-render script instead installs the same MathJax
# release from npm beside the pages and points each deck's math plugin at it.
MATHJAX_PARTS = ("MathJax.js", "config/TeX-AMS_HTML-full.js", "extensions", "jax/input/TeX", "jax/element",
                 "jax/output/HTML-CSS/jax.js", "jax/output/HTML-CSS/config.js", "jax/output/HTML-CSS/imageFonts.js",
                 "jax/output/HTML-CSS/autoload", "jax/output/HTML-CSS/fonts/TeX", "fonts/HTML-CSS/TeX/woff",
                 "fonts/HTML-CSS/TeX/otf", "localization/en")
_REVEAL_MATHJAX = re.compile(r"(math:\s*\{\s*mathjax:\s*')(https?://[^']*/MathJax\.js)(')")


def install_mathjax(project: Project) -> Path:
    """MathJax 2 (from node_modules, the release Quarto's decks load) in ``site_libs/mathjax/``: the
    TeX input, the HTML-CSS output with its TeX fonts and the extensions Quarto's configuration
    (``TeX-AMS_HTML-full``) loads."""
    src = _node_modules(project) / "mathjax"
    if not (src / "MathJax.js").exists():
        raise BuildError(project.root / "package.json", 1, "missing mathjax: run the set-up command (npm ci)")
    dst = project.output_dir / "site_libs" / "mathjax"
    for part in MATHJAX_PARTS:
        if (src / part).is_dir():
            _copy_tree(src / part, dst / part)
        else:
            (dst / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / part, dst / part)
    return dst / "MathJax.js"


def localize_deck_mathjax(deck: Path, mathjax: Path) -> bool:
    """Point a Quarto deck's math plugin at the local ``mathjax`` instead of the CDN.

    Returns whether the deck loaded MathJax from a remote URL (and now does not)."""
    html = deck.read_text(encoding="utf-8")
    local = _rel(mathjax, deck.parent)
    new, n = _REVEAL_MATHJAX.subn(lambda m: m.group(1) + local + m.group(3), html)
    if n:
        _write_atomic(deck, new)
    return bool(n)


def offline_math(project: Project) -> list[Path]:
    """What Quarto's post-render script does (tools/quarto_post_render.py): KaTeX and MathJax beside
    the pages, and every deck under ``lectures/`` pointed at the local MathJax. Returns the decks changed."""
    install_katex(project)
    mathjax = install_mathjax(project)
    return [p for p in sorted(project.output_dir.glob("lectures/*/*.html")) if localize_deck_mathjax(p, mathjax)]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def install_static_figures(project: Project) -> None:
    """The project's ``figures/`` (static diagrams) next to the pages that use them."""
    static = project.root / "figures"
    if static.exists():
        shutil.copytree(static, project.output_dir / "figures", dirs_exist_ok=True)
