#!/usr/bin/env bash
# C guests: guests/c-echo (echo.wasm) and the test fixture tests/components/c-chaos
# (chaos.wasm).
#
#   scripts/guests/c.sh check          exit 0 if the toolchain is installed, else 1 (silent)
#   scripts/guests/c.sh setup          install what is missing (safe to run again)
#   scripts/guests/c.sh build OUT_DIR  write OUT_DIR/echo.wasm and OUT_DIR/chaos.wasm
#
# Toolchain: Debian's clang-19/lld-19 with the wasm32-wasi (WASI preview 1)
# wasi-libc sysroot; `wit-bindgen c` for the bindings; `wasm-tools component
# new` to wrap the core module into a component. Debian's wasi-libc has no
# wasm32-wasip2 build, so the core module is preview 1 and any preview 1
# imports it has are turned into preview 2 ones by wasmtime's adapter
# (wasi_snapshot_preview1.reactor.wasm, from the crates.io crate
# wasi-preview1-component-adapter-provider, same version as the host's
# wasmtime), kept in target/toolchains/c/.
set -euo pipefail

WIT_BINDGEN_VERSION=0.63.0 # same as the Rust guests' wit-bindgen
WASM_TOOLS_VERSION=1.263.0 # newest that builds with rustc 1.95
ADAPTER_VERSION=48.0.8     # = the host's wasmtime version
APT_PACKAGES=(clang-19 lld-19 libclang-rt-19-dev-wasm32 wasi-libc)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
toolchain="$root/target/toolchains/c"
adapter="$toolchain/wasi_snapshot_preview1.reactor.wasm"
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$PATH:$cargo_bin"

CC=clang-19
# Files the compiler needs besides clang itself: linker, libc, compiler-rt.
SYSROOT_FILES=(
    /usr/lib/llvm-19/bin/wasm-ld
    /usr/include/wasm32-wasi/stdlib.h
    /usr/lib/wasm32-wasi/libc.a
    /usr/lib/wasm32-wasi/crt1-reactor.o
    /usr/lib/llvm-19/lib/clang/19/lib/wasi/libclang_rt.builtins-wasm32.a
)

# version_ge A B: true if version A >= version B.
version_ge() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

# tool_version TOOL: the version number `TOOL --version` prints, or nothing.
tool_version() {
    "$1" --version 2>/dev/null | awk 'NR == 1 { print $2 }'
}

have_clang() {
    command -v "$CC" >/dev/null 2>&1 || return 1
    local file
    for file in "${SYSROOT_FILES[@]}"; do
        [ -e "$file" ] || return 1
    done
}

have_wit_bindgen() {
    local version
    version="$(tool_version wit-bindgen)"
    [ -n "$version" ] && version_ge "$version" "$WIT_BINDGEN_VERSION" &&
        wit-bindgen c --help >/dev/null 2>&1
}

have_wasm_tools() {
    local version
    version="$(tool_version wasm-tools)"
    [ -n "$version" ] && version_ge "$version" "$WASM_TOOLS_VERSION"
}

have_adapter() {
    [ -s "$adapter" ]
}

check() {
    have_clang && have_wit_bindgen && have_wasm_tools && have_adapter
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

setup() {
    if ! have_clang; then
        echo "c.sh: installing ${APT_PACKAGES[*]}"
        as_root apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}" || {
            as_root apt-get update
            as_root apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
        }
    fi
    if ! have_wit_bindgen; then
        echo "c.sh: installing wit-bindgen-cli $WIT_BINDGEN_VERSION (about 4 minutes)"
        cargo install --locked wit-bindgen-cli --version "$WIT_BINDGEN_VERSION"
    fi
    if ! have_wasm_tools; then
        echo "c.sh: installing wasm-tools $WASM_TOOLS_VERSION (about 10 minutes)"
        cargo install --locked wasm-tools --version "$WASM_TOOLS_VERSION"
    fi
    if ! have_adapter; then
        echo "c.sh: fetching the WASI preview 1 adapter ($ADAPTER_VERSION)"
        fetch_adapter
    fi
    check || { echo "c.sh: setup finished but the toolchain is still incomplete" >&2; exit 1; }
}

# Lets cargo download wasi-preview1-component-adapter-provider into its
# registry (a throwaway crate depending on it), then copies the adapter out.
fetch_adapter() {
    local tmp manifest crate_dir
    tmp="$(mktemp -d)"
    mkdir "$tmp/src"
    touch "$tmp/src/lib.rs"
    cat >"$tmp/Cargo.toml" <<EOF
[package]
name = "fetch-adapter"
version = "0.0.0"
edition = "2021"

[dependencies]
wasi-preview1-component-adapter-provider = "=$ADAPTER_VERSION"
EOF
    manifest="$(cd "$tmp" && cargo metadata --format-version 1 |
        grep -o '"manifest_path":"[^"]*wasi-preview1-component-adapter-provider-[^"]*"' |
        sed 's/^"manifest_path":"//; s/"$//')"
    rm -rf "$tmp"
    crate_dir="$(dirname "$manifest")"
    mkdir -p "$toolchain"
    cp "$crate_dir/artefacts/wasi_snapshot_preview1.reactor.wasm" "$adapter.tmp"
    mv "$adapter.tmp" "$adapter"
}

# build_one SOURCE OUT: SOURCE plus the bindings -> core module -> component.
build_one() {
    local source="$1" out="$2" core="$gen/$(basename "$1" .c).core.wasm"
    # -Os: size; --gc-sections drops what is not reachable from the exports;
    # --strip-all drops debug info and names (the component-type custom
    # section that wasm-tools needs is kept).
    "$CC" --target=wasm32-wasi -mexec-model=reactor -Os -flto \
        -Wall -Wextra -Wno-unused-parameter -I "$gen" \
        -Wl,--gc-sections -Wl,--strip-all \
        -o "$core" "$source" "$gen/logpipe_handler.c" "$gen/logpipe_handler_component_type.o"
    # The adapter is only linked in if the module imports WASI preview 1
    # (stdio, clocks, ...); echo and chaos do not, so their components import
    # nothing but logpipe:handler/host.
    wasm-tools component new "$core" \
        --adapt "wasi_snapshot_preview1=$adapter" -o "$core.component"
    # Drop the remaining custom sections (names, producers).
    wasm-tools strip "$core.component" -o "$out.tmp"
    mv "$out.tmp" "$out"
}

build() {
    local out="$1"
    check || { echo "c.sh: toolchain missing; run scripts/guests/c.sh setup" >&2; exit 1; }
    mkdir -p "$out"
    out="$(cd "$out" && pwd)"
    gen="$(mktemp -d)"
    trap 'rm -rf "$gen"' EXIT
    local log
    if ! log="$(wit-bindgen c "$root/wit" --world logpipe-handler --out-dir "$gen" 2>&1)"; then
        echo "$log" >&2
        exit 1
    fi
    build_one "$root/guests/c-echo/echo.c" "$out/echo.wasm"
    build_one "$root/tests/components/c-chaos/chaos.c" "$out/chaos.wasm"
}

case "${1:-}" in
    check) check >/dev/null 2>&1 ;;
    setup) setup ;;
    build)
        [ $# = 2 ] || { echo "usage: $0 build OUT_DIR" >&2; exit 2; }
        build "$2"
        ;;
    *)
        echo "usage: $0 check | setup | build OUT_DIR" >&2
        exit 2
        ;;
esac
