"""coursebuild: render the course with Quarto, or without it (Jupyter + pandoc + Typst).

The Quarto-free path honours the Quarto constructs the course uses (cell
options, conditional content, notes, callouts, cross-references, citations,
shared macros) and writes the same output layout as ``quarto render``.
"""
