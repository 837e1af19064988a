#!/usr/bin/env bash
# kinesalite 3.3.3 (npm), the Kinesis-API server of the Kinesis tests: in
# memory, with SplitShard and MergeShards. Started by
# scripts/kinesis/kinesalite.js, which binds 127.0.0.1 only and can inject
# throttling faults. See scripts/kinesis/NOTES.md for how it behaves, and why
# moto is not used.
#
#   scripts/kinesis/setup.sh check   exit 0 if installed, else 1 (silent)
#   scripts/kinesis/setup.sh setup   install it if missing (safe to run again)
#
# Installs into target/toolchains/kinesis, exactly what
# scripts/kinesis/package-lock.json pins (~4 s, 9 MB).
set -euo pipefail

KINESALITE_VERSION=3.3.3 # also pinned in package.json / package-lock.json

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
kinesis_dir="$root/target/toolchains/kinesis"

usage() {
    echo "usage: scripts/kinesis/setup.sh check|setup" >&2
    exit 2
}

kinesalite_installed() {
    command -v node >/dev/null 2>&1 || return 1
    [ -f "$kinesis_dir/node_modules/kinesalite/package.json" ] || return 1
    # Installed from the lock file committed now (a changed pin reinstalls).
    cmp -s "$here/package.json" "$kinesis_dir/package.json" || return 1
    cmp -s "$here/package-lock.json" "$kinesis_dir/package-lock.json" || return 1
    # The pinned version, and it loads (kinesalite.js requires it the same way).
    node -e '
        const [dir, want] = process.argv.slice(1);
        if (require(dir + "/package.json").version !== want) process.exit(1);
        require(dir);
    ' "$kinesis_dir/node_modules/kinesalite" "$KINESALITE_VERSION" >/dev/null 2>&1
}

setup_kinesalite() {
    kinesalite_installed && return
    if ! command -v npm >/dev/null 2>&1; then
        echo "kinesis/setup.sh: node and npm are needed for kinesalite" >&2
        exit 1
    fi
    echo "kinesis/setup.sh: installing kinesalite $KINESALITE_VERSION into $kinesis_dir"
    mkdir -p "$kinesis_dir"
    cp "$here/package.json" "$here/package-lock.json" "$kinesis_dir/"
    # npm ci: exactly the committed lock file (transitive versions too).
    # --omit=optional: skip leveldown, a native module kinesalite only uses
    # for on-disk storage; the tests keep streams in memory (memdown).
    (cd "$kinesis_dir" && npm ci --omit=optional --no-audit --no-fund --loglevel=error)
    kinesalite_installed || {
        echo "kinesis/setup.sh: kinesalite $KINESALITE_VERSION does not load after install" >&2
        exit 1
    }
}

case "${1:-}" in
    check) kinesalite_installed ;;
    setup) setup_kinesalite ;;
    *) usage ;;
esac
