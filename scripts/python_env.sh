#!/usr/bin/env bash
# Makes .venv-tools: a Python environment for the fixture generators and peer benchmarks in
# scripts/. It sees the torch of .venv (through a .pth file, so torch is not installed twice)
# and installs the reference tools listed in scripts/requirements-*.txt. Idempotent.
# Usage: scripts/python_env.sh   then   .venv-tools/bin/python scripts/<script>.py
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/bootstrap.sh"
tools="$root/.venv-tools"
reqs=("$root"/scripts/requirements-*.txt)
want=$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)
stamp="$tools/.imagen-tools-stamp"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
python=$("$root/.venv/bin/python" -c 'import sys; print(sys._base_executable)')
"$python" -m venv "$tools"
base_site=$("$root/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
tools_site=$("$tools/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$base_site" >"$tools_site/imagen-base-venv.pth"
for r in "${reqs[@]}"; do
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check -r "$r"
done
echo "$want" >"$stamp"
