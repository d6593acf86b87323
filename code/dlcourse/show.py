"""Putting numbers and real source code on a slide or page.

Both helpers print Markdown; use them in a cell with ``#| output: asis``
(Quarto and the Quarto-free build both pass such output through as Markdown).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap


def sci(x: float, digits: int = 1) -> str:
    r"""A number in LaTeX scientific notation, e.g. ``sci(3.1e-7) == r"3.1 \times 10^{-7}"``.

    Args:
        x: the number.
        digits: digits after the decimal point of the mantissa.
    """
    mantissa, exponent = f"{x:.{digits}e}".split("e")
    return rf"{mantissa} \times 10^{{{int(exponent)}}}"


def source(obj, *, docstring: bool = False) -> str:
    """The source code of a function or class, optionally without its docstring.

    Args:
        obj: a function or class defined in a Python file.
        docstring: keep the docstring (default: drop it, slides are short).

    Returns:
        The dedented source as a string.
    """
    src = textwrap.dedent(inspect.getsource(obj))
    if docstring:
        return src.rstrip() + "\n"
    body = ast.parse(src).body[0].body
    first = body[0]
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return src.rstrip() + "\n"
    lines = src.splitlines()
    keep = lines[: first.lineno - 1] + lines[first.end_lineno:]
    return "\n".join(keep).rstrip() + "\n"


def show(*objs, docstring: bool = False) -> None:
    """Print the source of one or more functions as one Markdown Python code block.

    The code on the slide is then the code that ran: use it in a cell with
    ``#| output: asis``.
    """
    code = "\n\n".join(source(o, docstring=docstring).rstrip() for o in objs)
    fence = "```"
    while fence in code:
        fence += "`"
    print(f"{fence}python\n{code}\n{fence}")


def module_page(name: str) -> None:
    """Print a week's experiments module as Markdown: its docstring, then one section per
    top-level function or class, each a highlighted code block under a heading whose id is
    the function's name (so a caption can link to ``code.qmd#plot_risk``).

    Use it in the week's ``code.qmd`` in a cell with ``#| output: asis``.

    Args:
        name: the module's import name (the week's folder is the kernel's working directory).
    """
    module = importlib.import_module(name)
    text = inspect.getsource(module)
    tree = ast.parse(text)
    lines = text.splitlines()
    doc = ast.get_docstring(tree)
    if doc:
        print(doc.strip() + "\n")
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    for node in defs:
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        code = "\n".join(lines[start - 1: node.end_lineno])
        fence = "```"
        while fence in code:
            fence += "`"
        kind = "class" if isinstance(node, ast.ClassDef) else "def"
        print(f"## `{node.name}` {{#{node.name}}}\n")
        print(f"`{name}.py`, line {start} ({kind})\n")
        print(f"{fence}python\n{code}\n{fence}\n")
