# Shared by the install scripts (sourced): Debian packages when missing, and a virtualenv with
# this project. Sets `src`, the repository's root.
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
missing=()

# want PACKAGE [COMMAND]: install PACKAGE unless COMMAND is on the PATH (or, without one, unless
# the package is installed). By command for tools another source may provide: a Node.js from
# elsewhere brings its own npm, which Debian's npm package would conflict with.
want() {
    local package=$1 command=${2:-}
    if [[ -n $command ]]; then
        command -v "$command" >/dev/null && return 0
    else
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' && return 0
    fi
    missing+=("$package")
}

install_missing() {
    ((${#missing[@]})) || return 0
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# make_venv PREFIX: PREFIX/venv on Debian's Python, with this project installed (again, when it
# already is: the sources may have changed).
make_venv() {
    local venv=$1/venv
    [[ -x $venv/bin/python ]] || /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$src"
    mkdir -p "$1/bin"
}
