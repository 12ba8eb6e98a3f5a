#!/usr/bin/env bash
# Renders every template the way `cargo generate` would (render.sh), builds
# it, runs its unit tests and certifies it with berth-conformance in its own
# transport, keeping the JUnit reports in target/reports/. Run from the
# repository root after `cargo build --workspace` (.ci/test does).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
conf=$repo/target/debug/berth-conformance
mkdir -p target/reports
work=$(mktemp -d /tmp/berth-templates.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
# The generated crates share one target directory (they are outside the
# workspace, so they would otherwise build every dependency again each).
export CARGO_TARGET_DIR=$repo/target/templates

# volume-so: a shared object, certified with --plugin.
plugin-templates/render.sh volume-so "$work/acme-vol" acme-vol acme "$repo" >/dev/null
(cd "$work/acme-vol" && cargo test -q && cargo build -q)
"$conf" run --plugin "$CARGO_TARGET_DIR/debug/libacme_vol.so" \
  --format junit --output target/reports/conformance-template-volume-so.xml

# volume-remote: a binary serving the protocol, certified with --remote.
plugin-templates/render.sh volume-remote "$work/acme-remote" acme-remote acmer "$repo" >/dev/null
(cd "$work/acme-remote" && cargo test -q && cargo build -q)
"$CARGO_TARGET_DIR/debug/acme-remote" --socket "$work/acmer.sock" --root "$work/acmer-root" >"$work/acmer.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -S "$work/acmer.sock" ] && break; sleep 0.1; done
[ -S "$work/acmer.sock" ] || { cat "$work/acmer.log"; echo "the remote template did not start" >&2; exit 1; }
"$conf" run --remote "unix://$work/acmer.sock" \
  --format junit --output target/reports/conformance-template-volume-remote.xml
echo "templates: volume-so and volume-remote built, tested and certified"
