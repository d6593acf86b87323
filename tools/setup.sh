#!/usr/bin/env bash
# Set-up: everything the course needs, pinned, in one command (run from anywhere).
#   * a virtual environment .venv with the pinned Python packages (requirements.txt)
#     and this repository's packages (dlcourse, coursebuild) installed editable;
#   * reveal.js 5 and KaTeX from the npm registry (package-lock.json), for offline decks;
#   * Debian packages for the checks: poppler-utils (PDF text, fonts and pages) and chromium
#     (the browser the deck checks drive; COURSEBUILD_CHROMIUM may name another), when apt-get
#     is available;
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

echo "== system packages"
need=()
command -v pdftotext >/dev/null || need+=(poppler-utils)
[ -x "${COURSEBUILD_CHROMIUM:-/usr/bin/chromium}" ] || need+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >/dev/null; }; then
    cat >&2 <<EOF
setup: could not install ${need[*]} with apt-get (it needs Debian or Ubuntu, and root or sudo).
  The tests need them: poppler-utils (pdfinfo, pdffonts, pdftotext, pdftoppm) for the handout checks,
  chromium for the deck checks (driven by the pip package playwright; never run 'playwright install',
  no browser is downloaded), fonts-dejavu-core for the labels of the contact sheets.
  Install them by hand (sudo apt-get install ${need[*]}), or set COURSEBUILD_CHROMIUM to the path
  of another Chromium or Chrome, then run this set-up again.
EOF
    exit 1
  fi
fi

echo "== Quarto"
if command -v quarto >/dev/null; then
  echo "quarto $(quarto --version) found: 'python -m coursebuild render' will use it"
elif timeout 120 .venv/bin/python -m pip install -q "quarto-cli==1.10.19" >/dev/null 2>&1 && command -v .venv/bin/quarto >/dev/null; then
  echo "installed Quarto from PyPI (.venv/bin/quarto)"
else
  echo "Quarto is not available here (its PyPI package downloads the binary from GitHub);"
  echo "the course renders through the Quarto-free path (Jupyter + pandoc + Typst)."
fi
echo "setup: done"
