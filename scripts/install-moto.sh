#!/usr/bin/env bash
# Installs moto's server (a local AWS API, used by the SQS integration tests) into
# .venv-test at the repository root, and prints the path of moto_server.
# Idempotent: an existing venv is reused, and pip skips what is already installed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-test"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" >&2
fi
# The import check catches a moto installed without its server extras.
if ! "$venv/bin/python" -c 'import moto.server, flask, flask_cors' 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]' >&2
fi
echo "$venv/bin/moto_server"
