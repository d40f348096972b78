#!/usr/bin/env bash
# Installs libtorch (from PyPI's torch wheel) and the CUDA headers the native shim needs into a
# git-ignored .venv at the repository root. Idempotent: a venv whose stamp matches the pinned
# requirements is left alone, so a second run takes well under a second.
# `bootstrap.sh --check` only says whether that is so (exit 0) or a bootstrap is due (exit 1).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
req="$root/scripts/torch-requirements.txt"
stamp="$venv/.imagen-bootstrap-stamp"
want=$(sha256sum "$req" | cut -d' ' -f1)

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
[[ "${1:-}" == --check ]] && exit 1

python=${PYTHON:-python3}
echo "bootstrap: creating $venv with $($python --version 2>&1)" >&2
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
# One stable path to the wheel's torch package, whatever the venv's Python version is.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn "$site/torch" "$venv/torch"
# torch-sys and trainer/build.rs assume the C++11 ABI (LIBTORCH_CXX11_ABI defaults to 1).
"$venv/bin/python" -c 'import torch, sys; sys.exit(0 if torch._C._GLIBCXX_USE_CXX11_ABI else "bootstrap: this torch wheel uses the pre-C++11 ABI; set LIBTORCH_CXX11_ABI=0")'
echo "$want" >"$stamp"
echo "bootstrap: torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') ready in $venv" >&2
