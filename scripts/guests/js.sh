#!/usr/bin/env bash
# JavaScript guests: guests/js-echo (echo.wasm), guests/js-person (person.wasm)
# and the test fixture tests/components/js-chaos (chaos.wasm), written with the
# SDK in sdk/js (imported as "logpipe-sdk").
#
#   scripts/guests/js.sh check          exit 0 if the toolchain is installed, else 1 (silent)
#   scripts/guests/js.sh setup          install it into target/toolchains/js (safe to run again)
#   scripts/guests/js.sh build OUT_DIR  write OUT_DIR/echo.wasm, person.wasm and chaos.wasm
#
# Toolchain: componentize-qjs from npm (the QuickJS backend that
# `jco componentize --backend qjs` calls; used directly, without jco's ~300 MB
# of other dependencies). It embeds QuickJS-ng and the JS source into one
# component (~1.6 MB) and snapshots the initialised module with Wizer. Built
# with --sync: the host has no component-model async support, and the default
# runtime uses the async ABI. Needs node >= 18 and npm.
#
# Each guest folder is copied, with sdk/js as node_modules/logpipe-sdk, into a
# scratch module root so that `import ... from "logpipe-sdk"` resolves;
# componentize-qjs bundles every imported file into the component.
set -euo pipefail

COMPONENTIZE_QJS_VERSION=0.4.5 # = what @bytecodealliance/jco 1.35 uses for --backend qjs

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
toolchain="$root/target/toolchains/js"
package="$toolchain/node_modules/componentize-qjs"
cli="$package/cli.mjs"

# GUESTS: <folder (relative to the repo root)>:<entry file>:<output name>
GUESTS=(
    guests/js-echo:echo.js:echo
    guests/js-person:person.js:person
    tests/components/js-chaos:chaos.js:chaos
)

# now_ms: wall-clock milliseconds (bash 5's EPOCHREALTIME, else whole seconds).
now_ms() {
    if [ -n "${EPOCHREALTIME:-}" ]; then
        local t="${EPOCHREALTIME/[.,]/}"
        echo $((10#$t / 1000))
    else
        echo $(($(date +%s) * 1000))
    fi
}

usage() {
    echo "usage: scripts/guests/js.sh check | setup | build OUT_DIR" >&2
    exit 2
}

installed() {
    command -v node >/dev/null 2>&1 || return 1
    [ -f "$package/package.json" ] && [ -f "$cli" ] || return 1
    # The pinned version, and a native binding for this platform that loads.
    node -e '
        const [dir, want] = process.argv.slice(1);
        const pkg = require(dir + "/package.json");
        if (pkg.version !== want) process.exit(1);
        require(dir);
    ' "$package" "$COMPONENTIZE_QJS_VERSION" >/dev/null 2>&1
}

setup() {
    if installed; then
        return
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "js.sh: node and npm are needed (node >= 18)" >&2
        exit 1
    fi
    echo "js.sh: installing componentize-qjs $COMPONENTIZE_QJS_VERSION into $toolchain"
    mkdir -p "$toolchain"
    # A package.json of its own, so that npm does not look for one in a parent
    # folder and records the pin here.
    [ -f "$toolchain/package.json" ] ||
        printf '{ "name": "logpipe-js-toolchain", "private": true }\n' >"$toolchain/package.json"
    npm install --prefix "$toolchain" --no-audit --no-fund --save-exact \
        "componentize-qjs@$COMPONENTIZE_QJS_VERSION"
    installed || {
        echo "js.sh: componentize-qjs $COMPONENTIZE_QJS_VERSION does not load after install" >&2
        exit 1
    }
}

build() {
    local out="$1"
    installed || {
        echo "js.sh: the JavaScript toolchain is missing; run scripts/guests/js.sh setup" >&2
        exit 1
    }
    mkdir -p "$out"
    out="$(cd "$out" && pwd)"

    local stage
    stage="$(mktemp -d "${TMPDIR:-/tmp}/logpipe-js-build.XXXXXX")"
    # shellcheck disable=SC2064 # expand $stage now
    trap "rm -rf '$stage'" EXIT

    mkdir -p "$stage/node_modules/logpipe-sdk"
    cp "$root"/sdk/js/*.js "$root"/sdk/js/package.json "$stage/node_modules/logpipe-sdk/"

    local guest dir entry name start elapsed log
    for guest in "${GUESTS[@]}"; do
        IFS=: read -r dir entry name <<<"$guest"
        # Same relative path as in the repo, so stack traces name the real file.
        mkdir -p "$stage/$dir"
        cp -R "$root/$dir/." "$stage/$dir/"
        log="$stage/$name.log"
        start=$(now_ms)
        if ! node "$cli" --wit "$root/wit" --world logpipe-handler \
            --js "$stage/$dir/$entry" --module-root "$stage" --sync \
            --output "$out/.$name.wasm.tmp" >"$log" 2>&1; then
            cat "$log" >&2
            rm -f "$out/.$name.wasm.tmp"
            echo "js.sh: building $dir/$entry failed" >&2
            exit 1
        fi
        # Rename, so a host watching OUT_DIR never sees a half-written file.
        mv -f "$out/.$name.wasm.tmp" "$out/$name.wasm"
        elapsed=$(($(now_ms) - start))
        printf 'js.sh: %-12s %9d bytes  %5d ms  (%s/%s)\n' \
            "$name.wasm" "$(wc -c <"$out/$name.wasm")" "$elapsed" "$dir" "$entry"
    done
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
    *) usage ;;
esac
