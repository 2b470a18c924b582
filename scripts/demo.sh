#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# Set up, then run pyvirt's demo: boot the test guest in an embedded root and shut it down.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/setup.sh"
exec "$here/.venv/bin/python" -m pyvirt.demo "$@"
