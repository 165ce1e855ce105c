#!/usr/bin/env bash
# Set up mfdscope on a fresh Debian/Ubuntu machine: system tools the tests use for
# real (tcpdump), then a virtualenv in .venv with the package and its test extras.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v tcpdump >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tcpdump >/dev/null
    else
        echo "setup.sh: tcpdump is missing; install it (e.g. apt-get install tcpdump)" >&2
        exit 1
    fi
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import mfdscope, pytest, hypothesis" 2>/dev/null \
        || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test]'
    touch .venv/.installed
fi
