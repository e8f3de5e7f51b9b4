#!/usr/bin/env bash
# Makes sure the local notebook image the end-to-end tests start exists, building it when the
# inputs changed (integration-tests/images/notebook/build.sh: debootstrap + PyPI, no registry).
#
#   GANTRY_NOTEBOOK_IMAGE="$(bash .ci/notebook-image.sh)"
#
# Prints only the image tag on stdout; progress goes to stderr. Idempotent: a second run with
# nothing changed returns at once. Needs root, a running Docker engine, apt mirrors and PyPI
# (the first time only, or after the pins change).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec bash integration-tests/images/notebook/build.sh "$@"
