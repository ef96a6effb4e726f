#!/usr/bin/env bash
# Create .venv in the repository and install cnnkit (editable) with its test and edge-runtime extras from PyPI.
# Idempotent: when .venv exists and pyproject.toml has not changed since the last install, it
# returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# OCR renders its synthetic text with the machine's fonts and draws words from the system dictionary: several
# families from Debian's font packages (DejaVu, Liberation, FreeFont, URW's base 35) and wamerican
if [ ! -d /usr/share/fonts/truetype/liberation2 ] || [ ! -d /usr/share/fonts/opentype/urw-base35 ] || [ ! -f /usr/share/dict/words ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        # not fatal: without them OCR still has matplotlib's DejaVu and its own English text
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core fonts-liberation2 \
            fonts-freefont-ttf fonts-urw-base35 wamerican >/dev/null; } || echo "setup: apt-get could not install the OCR fonts" >&2
    else
        echo "setup: for OCR's text fonts run: sudo apt-get install fonts-dejavu-core fonts-liberation2 fonts-freefont-ttf fonts-urw-base35 wamerican" >&2
    fi
fi
# the browser test of `cnnkit serve`'s web page drives Debian's Chromium through its driver (tests/serve/test_browser.py)
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
            || echo "setup: apt-get could not install chromium and chromium-driver (the browser test needs them)" >&2
    else
        echo "setup: for the browser test run: sudo apt-get install chromium chromium-driver" >&2
    fi
fi
stamp=.venv/.cnnkit-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $($PYTHON --version 2>&1)"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
if [ ! -x .venv/bin/python ]; then
    if ! $PYTHON -m venv .venv 2>/dev/null; then
        rm -rf .venv
        # Debian ships venv separately; install it when we may, else say what to do
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            $PYTHON -m venv .venv
        else
            echo "setup: python3 -m venv failed; install it with: sudo apt-get install python3-venv" >&2
            exit 2
        fi
    fi
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test,edge]"  # edge: the tests export to every edge runtime
# TrackEval (the MOTChallenge reference metrics) declares the GUI build of OpenCV as a dependency; installed
# beside cnnkit's headless build, the two overwrite each other's cv2. Its other dependencies are cnnkit's own.
.venv/bin/python -m pip install --quiet --no-deps "trackeval>=1.3,<2"
echo "$want" > "$stamp"
echo "setup: cnnkit installed in .venv ($(.venv/bin/cnnkit --version))"
