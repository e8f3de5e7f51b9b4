#!/usr/bin/env bash
# Creates or updates the Python environment the end-to-end tests run JupyterHub from.
#
#   integration-tests/python-env.sh [VENV_DIR]     (default: <repo>/.venv, git-ignored)
#
# Installs the pinned packages of integration-tests/python-requirements.txt. Idempotent:
# a stamp file inside the venv holds the hash of the requirements and of the interpreter's
# version, so a second run with nothing changed returns at once. Set PYTHON to choose the
# interpreter (default: python3.11, else python3); it must be CPython 3.11 or newer.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="${1:-${GANTRY_TEST_VENV:-$repo/.venv}}"
requirements="$here/python-requirements.txt"
stamp="$venv/.gantry-requirements.sha256"

if [[ -z "${PYTHON:-}" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "python-env.sh: $PYTHON is missing or older than Python 3.11; set PYTHON to a 3.11+ interpreter" >&2
    exit 1
fi

want="$({ cat "$requirements"; "$PYTHON" -VV; } | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/jupyterhub" ]]; then
    echo "python-env.sh: $venv is up to date"
    exit 0
fi

echo "python-env.sh: installing the end-to-end test packages into $venv"
# Start from an empty venv so that packages the pins no longer name do not linger.
"$PYTHON" -m venv --clear "$venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install --quiet --no-input -r "$requirements"
"$venv/bin/python" -m pip check
echo "$want" >"$stamp"
echo "python-env.sh: done ($("$venv/bin/jupyterhub" --version 2>/dev/null | tail -n1))"
