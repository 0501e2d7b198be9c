#!/usr/bin/env bash
# Install `emofuse serve` into .venv (or the active virtual environment): the pinned PyPI packages
# of the `serve` extra (FastAPI, uvicorn, python-multipart, httpx for the test client), selenium
# for the browser test, and, as root, Debian's chromium and chromium-driver (the browser test drives
# them; selenium is pointed at /usr/bin/chromedriver and never downloads one). Idempotent and quiet:
# a second run installs nothing. torch stays pinned through scripts/constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then py="$VIRTUAL_ENV/bin/python"; fi
[ -x "$py" ] || { echo "install_serve: no $py; run scripts/setup.sh first" >&2; exit 1; }

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "install_serve: apt-get install chromium chromium-driver" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "install_serve: no chromium/chromedriver (the browser test skips); install them as root:" \
             "apt-get install chromium chromium-driver" >&2
    fi
fi

pins=$(sed -n '/^serve = \[/,/^\]/p' pyproject.toml | grep -o '"[^"]*"' | tr -d '"')
tests="selenium==4.51.0"  # the browser test only; not part of the extra a user installs
# pip's own check is slow; ask importlib.metadata whether every pin is already there
if ! "$py" scripts/pins_installed.py $pins $tests; then
    echo "install_serve: installing the serve packages" >&2
    # shellcheck disable=SC2086
    "$py" -m pip install --quiet --disable-pip-version-check -c scripts/constraints.txt $pins $tests
fi
