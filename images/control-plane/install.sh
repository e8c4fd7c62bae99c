#!/usr/bin/env bash
# Installs the control plane into PREFIX (default /opt/open-inspect): this project in
# PREFIX/venv on Debian's Python, and git for the repository mirrors, then checks the result.
# images/control-plane/Dockerfile builds the image with it; the tests run it on the host too.
# Idempotent: run again, it only reinstalls the project.
set -euo pipefail
prefix=$(realpath -m "${1:-/opt/open-inspect}")
source "$(dirname "$0")/../common.sh"

want ca-certificates
want git git
want python3 /usr/bin/python3
want python3-venv
install_missing
make_venv "$prefix"
ln -sfn ../venv/bin/open-inspect "$prefix/bin/open-inspect"

echo "self-check:"
"$prefix/venv/bin/python" -c 'import bot, core, sandbox, web_minimal'
key=$("$prefix/bin/open-inspect" keygen)
[[ $(printf %s "$key" | base64 -d | wc -c) -eq 32 ]] || { echo "keygen printed $key" >&2; exit 1; }
"$prefix/venv/bin/python" --version
git --version
echo "self-check passed: the control plane is in $prefix"
