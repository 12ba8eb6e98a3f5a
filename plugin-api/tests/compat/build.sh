#!/bin/sh
# Builds the ABI compatibility fixture plugins (libcompat10.so,
# libcompat20.so, libcompatbad.so) into one target directory, copies the
# workspace's faulty plugin (libberth_fixture_faulty.so, from
# conformance/fixtures/faulty) next to them, and prints the directory
# holding all four, for `berth-conformance run --fixtures DIR`.
#
# usage: plugin-api/tests/compat/build.sh [TARGET_DIR]
#        (default TARGET_DIR: <workspace>/target/compat)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
workspace=$(cd "$here/../../.." && pwd)
target=${1:-$workspace/target/compat}
mkdir -p "$target"
target=$(cd "$target" && pwd)
cargo=${CARGO:-cargo}
for p in plugin-1.0 plugin-2.0 plugin-bad; do
    "$cargo" build --quiet --manifest-path "$here/$p/Cargo.toml" --target-dir "$target" >&2
done
"$cargo" build --quiet --manifest-path "$workspace/Cargo.toml" --target-dir "$workspace/target" -p berth-fixture-faulty >&2
so=libberth_fixture_faulty.so
cp "$workspace/target/debug/$so" "$target/debug/.$so.$$"
mv -f "$target/debug/.$so.$$" "$target/debug/$so"
echo "$target/debug"
