#!/usr/bin/env bash
# The tools the tests need and rendering does not: poppler (pdfinfo, pdffonts, pdftotext,
# pdftoppm) for the handout checks, Chromium for the deck checks (driven by the pip package
# playwright; no browser is ever downloaded), DejaVu fonts for the contact sheets' labels.
#   bash tools/setup_test_tools.sh           install what is missing (apt-get, Debian/Ubuntu)
#   bash tools/setup_test_tools.sh --check   only report what is missing; exit 0
# .ci/run calls it; a render-only set-up (tools/setup.sh) does not need it.
set -euo pipefail
check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  *) echo "usage: bash tools/setup_test_tools.sh [--check]" >&2; exit 2 ;;
esac

chromium="${COURSEBUILD_CHROMIUM:-/usr/bin/chromium}"
need=()
command -v pdftotext >/dev/null || need+=(poppler-utils)
[ -x "$chromium" ] || need+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)

how() {
  cat >&2 <<MSG
The tests' browser and PDF checks need: ${need[*]}.
  Debian/Ubuntu:  sudo apt-get install ${need[*]}   (or: bash tools/setup_test_tools.sh)
  macOS:          brew install poppler; install Google Chrome or Chromium and
                  export COURSEBUILD_CHROMIUM="/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"
  elsewhere:      poppler's command-line tools on PATH, and COURSEBUILD_CHROMIUM naming a Chrome or Chromium.
Rendering does not need them; without them the test command skips those checks (and fails under CI).
MSG
}

if [ ${#need[@]} -eq 0 ]; then
  echo "test tools: poppler, Chromium ($chromium) and DejaVu fonts present"
  exit 0
fi
if [ "$check_only" = 1 ]; then
  how
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "setup_test_tools: no apt-get on this machine." >&2
  how
  exit 1
fi
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# Wait up to ten minutes for another package installation to release dpkg's lock.
lock=(-o DPkg::Lock::Timeout=600)
if ! { $SUDO apt-get "${lock[@]}" update -qq && $SUDO apt-get "${lock[@]}" install -y -qq "${need[@]}" >/dev/null; }; then
  echo "setup_test_tools: apt-get could not install ${need[*]} (it needs root or sudo)." >&2
  how
  exit 1
fi
echo "test tools: installed ${need[*]}"
