#!/usr/bin/env bash
# Installs what a sandbox runs into PREFIX (default /opt/open-inspect): this project in
# PREFIX/venv (`python -m sandbox`), the pinned OpenCode at PREFIX/bin/opencode, and a
# development environment for the agent: git, Python, Node.js and npm, Chromium with the
# libraries Playwright's browsers load. Then checks the result.
# images/sandbox/Dockerfile builds the image with it; the tests run it on the host too.
# Idempotent: run again, it only reinstalls the project.
set -euo pipefail
prefix=$(realpath -m "${1:-/opt/open-inspect}")
source "$(dirname "$0")/../common.sh"

want ca-certificates
want curl curl
want procps ps
want git git
want python3 /usr/bin/python3
want python3-venv
want nodejs node
want npm npm
want ripgrep rg
# Debian's Chromium pulls in the shared libraries Playwright's Chromium needs (nss, atk,
# cups, drm, gbm, xkbcommon, pango, asound…); the fonts keep rendered pages legible.
want chromium chromium
want fonts-liberation
install_missing
make_venv "$prefix"

# The version pinned by sandbox/opencode/package-lock.json, installed with `npm ci` exactly as
# the engine would install it on first use (and checked to say that version).
binary=$("$prefix/venv/bin/python" -c '
import sys
from pathlib import Path
from core.sandboxes.opencode import install
print(install(Path(sys.argv[1])))
' "$prefix/opencode")
ln -sfn "$binary" "$prefix/bin/opencode"

echo "self-check:"
"$prefix/venv/bin/python" -c 'import core.protocol, sandbox.supervisor'
pinned=$("$prefix/venv/bin/python" -c 'from core.sandboxes.opencode import pinned_version as v; print(v())')
said=$("$prefix/bin/opencode" --version)
[[ $said == "$pinned" ]] || { echo "opencode says $said, not $pinned" >&2; exit 1; }
echo "opencode $said"
"$prefix/venv/bin/python" --version
git --version
echo "node $(node --version), npm $(npm --version)"
chromium --version 2>/dev/null  # Debian's wrapper script prints a spurious shell warning
echo "self-check passed: the sandbox runtime is in $prefix"
