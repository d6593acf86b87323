#!/usr/bin/env bash
# Set-up: everything rendering the course needs, pinned, in one command (run from anywhere).
# It needs Python 3.11 or newer and Node.js with npm, nothing else; it succeeds without root.
# The tools only the tests need are set up by tools/setup_test_tools.sh (.ci/run calls both).
#   * a virtual environment .venv with the pinned Python packages (requirements.txt)
#     and this repository's packages (dlcourse, coursebuild) installed editable;
#   * reveal.js 5, KaTeX and MathJax 2 (for Quarto's decks) from the npm registry (package-lock.json), offline math,
#     and the chalkboard plugin of reveal.js-plugins (pinned tarball);
#   * Quarto, where it can be had (PyPI's quarto-cli); without it the course renders
#     through the Quarto-free path.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

echo "== Python packages (.venv)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip==26.3
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps -e .

echo "== front-end assets (node_modules)"
npm ci --no-audit --no-fund --loglevel=error
# The lecturer's pen: the chalkboard of reveal.js-plugins (npm registry), pinned by its integrity
# hash. Installed from its tarball alone, because the package declares a dependency on npm 6
# (33 MB) that the plugin never uses.
CHALK_TGZ=reveal.js-plugins-4.6.0.tgz
CHALK_SHA512=3x7iE7zK7vtiswykcxwJL5VX4IKkk/rFc3bDjgO13ACFjPuC3MzYtI8ARchXPwkrWR7qckNwFJ0JNPf5jhnpzA==
tmp=$(mktemp -d)
npm pack reveal.js-plugins@4.6.0 --pack-destination "$tmp" --silent >/dev/null
got=$(.venv/bin/python -c 'import base64, hashlib, sys; print(base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tmp/$CHALK_TGZ")
[ "$got" = "$CHALK_SHA512" ] || { echo "setup: $CHALK_TGZ does not match its pinned hash" >&2; exit 1; }
rm -rf node_modules/reveal.js-plugins && mkdir -p node_modules/reveal.js-plugins
tar -xzf "$tmp/$CHALK_TGZ" -C node_modules/reveal.js-plugins --strip-components=1
rm -rf "$tmp"

echo "== Quarto"
if command -v quarto >/dev/null; then
  echo "quarto $(quarto --version) found: 'python -m coursebuild render' will use it"
elif timeout 120 .venv/bin/python -m pip install -q "quarto-cli==1.10.19" >/dev/null 2>&1 && command -v .venv/bin/quarto >/dev/null; then
  echo "installed Quarto from PyPI (.venv/bin/quarto)"
else
  echo "Quarto is not available here (its PyPI package downloads the binary from GitHub);"
  echo "the course renders through the Quarto-free path (Jupyter + pandoc + Typst)."
fi
bash tools/setup_test_tools.sh --check
echo "setup: done"
