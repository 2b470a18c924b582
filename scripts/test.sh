#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Set up (packages, venv, oracle, test guest), then run the whole test suite.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
scripts/setup.sh --test
.venv/bin/pyvirt-test-guest build
.venv/bin/ruff check src tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest -n 2 -p no:cacheprovider "$@"
