#!/usr/bin/env bash
# Python guests, built with componentize-py (CPython compiled to wasm, with
# the app pre-initialised and snapshotted into the component).
#
#   scripts/guests/python.sh check          exit 0 if the toolchain is installed
#   scripts/guests/python.sh setup          install it (idempotent)
#   scripts/guests/python.sh build OUT_DIR  build OUT_DIR/{echo,person,chaos}.wasm
#
# The toolchain is a venv at target/toolchains/python (made with the
# machine's python3) holding componentize-py 0.25.1. Nothing outside
# target/ is written: sources are copied to a scratch folder under target/
# before building, since componentize-py writes __pycache__ next to them.
# `build` skips a guest whose sources and output are unchanged since its last
# build into the same OUT_DIR (stamps in target/toolchains/); delete the
# .wasm to force a rebuild.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$root/target/toolchains/python"
version=0.25.1
componentize_py="$venv/bin/componentize-py"

usage() {
    echo "usage: $0 check | setup | build OUT_DIR" >&2
    exit 2
}

installed() {
    [ -x "$componentize_py" ] &&
        [ "$("$componentize_py" --version 2>/dev/null)" = "componentize-py $version" ]
}

setup() {
    if installed; then
        echo "componentize-py $version already installed in $venv"
        return
    fi
    if ! command -v python3 >/dev/null; then
        echo "error: python3 not found (needed to create $venv)" >&2
        exit 1
    fi
    # A venv whose interpreter went away (e.g. the base Python was
    # upgraded) cannot be repaired: make a new one.
    if [ -e "$venv" ] && ! "$venv/bin/python" -c '' 2>/dev/null; then
        rm -rf "$venv"
    fi
    if [ ! -e "$venv/bin/python" ]; then
        mkdir -p "$(dirname "$venv")"
        python3 -m venv "$venv"
    fi
    # --no-cache-dir: leave ~/.cache/pip alone.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
        "componentize-py==$version"
    if ! installed; then
        echo "error: componentize-py $version did not install into $venv" >&2
        exit 1
    fi
    echo "installed componentize-py $version into $venv"
}

build() {
    if ! installed; then
        echo "error: componentize-py $version is not installed; run $0 setup" >&2
        exit 1
    fi
    mkdir -p "$1"
    local out
    out="$(cd "$1" && pwd)"
    scratch="$(mktemp -d "$root/target/python-guests.XXXXXX")"
    trap 'rm -rf "$scratch"' EXIT

    # componentize-py output is not byte-reproducible (componentize-py
    # issue #247), so an unchanged guest would get a new hash on every
    # build, and the host would recompile it (~25 s per Python component in
    # a debug build). Skip guests whose inputs and output are unchanged since
    # the last build into the same OUT_DIR; delete the .wasm to force one.
    local stamps="$root/target/toolchains/python-build-stamps"
    mkdir -p "$stamps"

    # build_one <name> <app dir>: <app dir>/app.py is the app module.
    build_one() {
        local name="$1" src="$root/$2" dir="$scratch/$1" start end inputs stamp
        inputs="$(
            cd "$root" &&
                {
                    echo "componentize-py $version"
                    sha256sum scripts/guests/python.sh
                    find sdk/python "$2" wit -type f -not -path '*/__pycache__/*' |
                        LC_ALL=C sort | xargs -d '\n' sha256sum
                } | sha256sum | cut -d' ' -f1
        )"
        stamp="$stamps/$(printf '%s' "$out/$name.wasm" | sha256sum | cut -d' ' -f1)"
        if [ -f "$out/$name.wasm" ] && [ -f "$stamp" ] &&
            [ "$(cat "$stamp")" = "$inputs $(sha256sum <"$out/$name.wasm" | cut -d' ' -f1)" ]; then
            printf 'python %-12s %9d bytes  up to date\n' "$name.wasm" "$(wc -c <"$out/$name.wasm")"
            return
        fi
        rm -f "$stamp"
        mkdir -p "$dir/sdk" "$dir/app"
        cp -R "$root/sdk/python/." "$dir/sdk/"
        cp -R "$src/." "$dir/app/"
        find "$dir" -name __pycache__ -prune -exec rm -rf {} +
        start="$(date +%s)"
        # VIRTUAL_ENV: componentize-py adds that venv's site-packages to the
        # path (only componentize-py and pip live there), rather than the
        # machine's site-packages, so the build does not depend on what else
        # is installed. Only modules the app imports are bundled.
        if ! VIRTUAL_ENV="$venv" PYTHONPATH= "$componentize_py" \
            -d "$root/wit" -w logpipe-handler \
            componentize app -p "$dir/sdk" -p "$dir/app" \
            -o "$out/.$name.wasm.tmp" >"$dir/log" 2>&1; then
            cat "$dir/log" >&2
            rm -f "$out/.$name.wasm.tmp"
            echo "error: building $name.wasm from $2 failed" >&2
            exit 1
        fi
        # Rename, so a host watching OUT_DIR never sees a partial file.
        mv -f "$out/.$name.wasm.tmp" "$out/$name.wasm"
        echo "$inputs $(sha256sum <"$out/$name.wasm" | cut -d' ' -f1)" >"$stamp"
        end="$(date +%s)"
        printf 'python %-12s %9d bytes  %3ds\n' "$name.wasm" \
            "$(wc -c <"$out/$name.wasm")" "$((end - start))"
    }

    build_one echo guests/python-echo
    build_one person guests/python-person
    build_one chaos tests/components/python-chaos
}

case "${1:-}" in
check)
    [ $# -eq 1 ] || usage
    installed
    ;;
setup)
    [ $# -eq 1 ] || usage
    setup
    ;;
build)
    [ $# -eq 2 ] || usage
    build "$2"
    ;;
*)
    usage
    ;;
esac
