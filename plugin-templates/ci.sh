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

# A kind's two templates share their driver source byte for byte (each
# template must stand alone once generated, so the files are copies): fail
# when the copies drift apart.
for kind in storage ipam network; do
  for f in plugin-templates/$kind-remote/src/*.rs; do
    twin=plugin-templates/$kind-so/src/$(basename "$f")
    if [ -f "$twin" ] && ! cmp -s "$f" "$twin"; then
      echo "$f and $twin differ: the two $kind templates must share their driver source" >&2
      exit 1
    fi
  done
done

# serve NAME BINARY ARGS...: starts a remote template on $work/NAME.sock and
# waits for the socket.
serve() {
  local name=$1 bin=$2
  shift 2
  "$bin" --socket "$work/$name.sock" "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do [ -S "$work/$name.sock" ] && return 0; sleep 0.1; done
  cat "$work/$name.log"
  echo "the remote template $bin did not start" >&2
  exit 1
}

# volume-so: a shared object, certified with --plugin.
plugin-templates/render.sh volume-so "$work/acme-vol" acme-vol acme "$repo" >/dev/null
(cd "$work/acme-vol" && cargo test -q && cargo build -q && cargo clippy -q --all-targets -- -D warnings && cargo fmt --check)
"$conf" run --plugin "$CARGO_TARGET_DIR/debug/libacme_vol.so" \
  --format junit --output target/reports/conformance-template-volume-so.xml

# volume-remote: a binary serving the protocol, certified with --remote.
plugin-templates/render.sh volume-remote "$work/acme-remote" acme-remote acmer "$repo" >/dev/null
(cd "$work/acme-remote" && cargo test -q && cargo build -q && cargo clippy -q --all-targets -- -D warnings && cargo fmt --check)
serve acmer "$CARGO_TARGET_DIR/debug/acme-remote" --root "$work/acmer-root"
"$conf" run --remote "unix://$work/acmer.sock" \
  --format junit --output target/reports/conformance-template-volume-remote.xml
# storage-so: a shared object, certified with --plugin (ST-01..ST-19).
plugin-templates/render.sh storage-so "$work/acme-store" acme-store acmefs "$repo" >/dev/null
(cd "$work/acme-store" && cargo test -q && cargo build -q && cargo clippy -q --all-targets -- -D warnings && cargo fmt --check)
"$conf" run --plugin "$CARGO_TARGET_DIR/debug/libacme_store.so" \
  --format junit --output target/reports/conformance-template-storage-so.xml

# storage-remote: a binary serving GraphDriver.*, certified with --remote.
plugin-templates/render.sh storage-remote "$work/acme-store-remote" acme-store-remote acmefsr "$repo" >/dev/null
(cd "$work/acme-store-remote" && cargo test -q && cargo build -q && cargo clippy -q --all-targets -- -D warnings && cargo fmt --check)
serve acmefsr "$CARGO_TARGET_DIR/debug/acme-store-remote" --root "$work/acmefsr-root" --run-root "$work/acmefsr-run"
"$conf" run --remote "unix://$work/acmefsr.sock" \
  --format junit --output target/reports/conformance-template-storage-remote.xml

# ipam-so: a shared object, certified with --plugin.
plugin-templates/render.sh ipam-so "$work/acme-ipam" acme-ipam acmeipam "$repo" >/dev/null
(cd "$work/acme-ipam" && cargo test -q && cargo build -q && cargo clippy -q --all-targets -- -D warnings && cargo fmt --check)
"$conf" run --plugin "$CARGO_TARGET_DIR/debug/libacme_ipam.so" \
  --format junit --output target/reports/conformance-template-ipam-so.xml

# ipam-remote: a binary serving the protocol, certified with --remote.
plugin-templates/render.sh ipam-remote "$work/acme-ipam-remote" acme-ipam-remote acmeipamr "$repo" >/dev/null
(cd "$work/acme-ipam-remote" && cargo test -q && cargo build -q && cargo clippy -q --all-targets -- -D warnings && cargo fmt --check)
serve acmeipamr "$CARGO_TARGET_DIR/debug/acme-ipam-remote" --state "$work/acmeipamr-state"
"$conf" run --remote "unix://$work/acmeipamr.sock" \
  --format junit --output target/reports/conformance-template-ipam-remote.xml

# network-so: a shared object, certified with --plugin (root: the network
# cases make namespaces, veths and bridges of their own and remove them).
plugin-templates/render.sh network-so "$work/acme-net" acme-net acmenet "$repo" >/dev/null
(cd "$work/acme-net" && cargo test -q && cargo build -q && cargo clippy -q --all-targets -- -D warnings && cargo fmt --check)
"$conf" run --plugin "$CARGO_TARGET_DIR/debug/libacme_net.so" \
  --format junit --output target/reports/conformance-template-network-so.xml

# network-remote: the same driver behind Docker's network plugin protocol.
plugin-templates/render.sh network-remote "$work/acme-netr" acme-netr acmenetr "$repo" >/dev/null
(cd "$work/acme-netr" && cargo test -q && cargo build -q && cargo clippy -q --all-targets -- -D warnings && cargo fmt --check)
serve acmenetr "$CARGO_TARGET_DIR/debug/acme-netr" --root "$work/acmenetr-root"
"$conf" run --remote "unix://$work/acmenetr.sock" \
  --format junit --output target/reports/conformance-template-network-remote.xml

# Planted faults in copies of the templates must fail the right case, with
# a message that tells the vendor what to fix.
bash plugin-templates/faults/storage.sh   # a layer copy that drops xattrs: ST-14
bash plugin-templates/faults/ipam.sh      # the allocator hands out the gateway: IP-04
bash plugin-templates/faults/network.sh   # DeleteEndpoint leaves its veth: NW-08
echo "templates: volume, storage, IPAM and network, each as a shared object and as a remote driver, built, tested and certified; planted faults caught"
