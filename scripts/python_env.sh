#!/usr/bin/env bash
# Python environments for the scripts in scripts/. Each sees the torch of .venv (through a .pth
# file, so torch is not installed twice) and installs one scripts/requirements-<area>.txt:
#   scripts/python_env.sh          .venv-tools: what the tests read our output with
#                                  (TensorBoard's reader, Python's safetensors, pyarrow);
#                                  `make test` runs it
#   scripts/python_env.sh AREA     .venv-AREA: the reference tools of a fixture generator or peer
#                                  benchmark (data, text, eval), e.g. `scripts/python_env.sh text`
# Idempotent: an environment whose requirements did not change is left alone.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/bootstrap.sh"
area=${1:-trainer}
req="$root/scripts/requirements-$area.txt"
[[ -f "$req" ]] || { echo "python_env: no $req" >&2; exit 2; }
if [[ "$area" == trainer ]]; then tools="$root/.venv-tools"; else tools="$root/.venv-$area"; fi
want=$(sha256sum "$req" | cut -d' ' -f1)
stamp="$tools/.imagen-tools-stamp"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
python=$("$root/.venv/bin/python" -c 'import sys; print(sys._base_executable)')
"$python" -m venv "$tools"
base_site=$("$root/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
tools_site=$("$tools/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$base_site" >"$tools_site/imagen-base-venv.pth"
"$tools/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
echo "$want" >"$stamp"
echo "python_env: $tools ready" >&2
