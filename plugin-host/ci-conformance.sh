#!/usr/bin/env bash
# Runs the conformance suites black-box over Docker's plugin protocol:
# berth's built-in drivers served out of process by berth-plugin-host, and
# berth-conformance --remote against each socket. JUnit reports land in
# target/reports/. Run from the repository root after `cargo build
# --workspace` (.ci/test does).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/target/debug
mkdir -p target/reports
work=$(mktemp -d /tmp/berth-remote-conf.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  grep -q "$work" /proc/self/mountinfo && umount -R "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

serve() { # name lib.so
  "$bin/berth-plugin-host" --plugin "$bin/$2" --socket "$work/$1.sock" --name "$1" \
    --root "$work/$1/root" --run-root "$work/$1/run" >"$work/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do [ -S "$work/$1.sock" ] && return 0; sleep 0.1; done
  cat "$work/$1.log"; echo "berth-plugin-host did not serve $2" >&2; exit 1
}

for pair in "local:libberth_volume_local.so" "vfs:libberth_storage_vfs.so" "overlay2:libberth_storage_overlay2.so" \
  "ipam-default:libberth_ipam_default.so" "ipam-null:libberth_ipam_null.so" \
  "network-none:libberth_network_none.so" "network-host:libberth_network_host.so" \
  "network-bridge:libberth_network_bridge.so" "network-macvlan:libberth_network_macvlan.so"; do
  name=${pair%%:*} lib=${pair#*:}
  serve "$name" "$lib"
  "$bin/berth-conformance" run --remote "unix://$work/$name.sock" \
    --format junit --output "target/reports/conformance-$name-remote.xml"
done
