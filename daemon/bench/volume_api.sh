#!/usr/bin/env bash
# Volume API throughput, berthd beside Debian's dockerd as the reference:
# create, inspect, list and remove N volumes (default 10,000) through the
# Docker Engine API on each daemon's unix socket, with the same load
# generator (daemon/examples/volume_load.rs), sequentially (1 connection)
# and concurrently (16 and 64 connections). Prints one JSON line per phase and the
# berthd/dockerd ratios.
#
#   bash daemon/bench/volume_api.sh [N]
#   NO_DOCKER=1: berthd only; BENCH_DIR=/dev/shm: roots on tmpfs (no disk)
#
# Targets (DESIGN.md): >= 5,000 creates/s and >= 20,000 inspects/s.
# Each daemon runs on a fresh root under a temp dir, removed afterwards;
# dockerd runs with --iptables=false --bridge=none and the FORWARD policy
# is restored in any case.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-10000}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q --workspace --bins --lib --examples
rel=$PWD/target/release
tmp=$(mktemp -d "${BENCH_DIR:-/var/tmp}/berth-volbench.XXXXXX")
pids=()
policy=$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/ {print $3}' || true)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$policy" ] && [ "$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/ {print $3}')" != "$policy" ]; then
    iptables -P FORWARD "$policy"
  fi
  grep -q "$tmp" /proc/self/mountinfo && umount -R "$tmp"/*/root 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

wait_sock() { for _ in $(seq 1 300); do [ -S "$1" ] && curl -sf --unix-socket "$1" http://x/_ping >/dev/null && return 0; sleep 0.1; done; echo "no answer on $1" >&2; exit 1; }

sed "s#plugin_dirs = .*#plugin_dirs = [\"$rel\"]#" core/src/default.toml >"$tmp/berth.toml"
"$rel/berthd" --config "$tmp/berth.toml" --root "$tmp/b/root" --exec-root "$tmp/b/run" \
  --socket "$tmp/b/berth.sock" --log-level error &
pids+=($!)
wait_sock "$tmp/b/berth.sock"

run() { # daemon socket connections
  "$rel/examples/volume_load" "$2" "$n" "$3" | sed "s/^{/{\"daemon\":\"$1\",/" | tee -a "$tmp/results"
}
for c in 1 16 64; do run berthd "$tmp/b/berth.sock" "$c"; done

if [ -z "${NO_DOCKER:-}" ] && command -v dockerd >/dev/null; then
  mkdir -p "$tmp/d"
  dockerd --data-root "$tmp/d/root" --exec-root "$tmp/d/run" -H "unix://$tmp/d/docker.sock" \
    --pidfile "$tmp/d/docker.pid" --iptables=false --ip6tables=false --bridge=none --log-level=error \
    >"$tmp/d/log" 2>&1 &
  pids+=($!)
  wait_sock "$tmp/d/docker.sock"
  for c in 1 16 64; do run dockerd "$tmp/d/docker.sock" "$c"; done
else
  echo "dockerd not installed (apt-get install -y docker.io): no reference figures" >&2
fi

python3 - "$tmp/results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {(r["daemon"], r["phase"], r["connections"]): r for r in rows}
print(f"{'phase':8} {'conns':>5} {'berthd/s':>10} {'dockerd/s':>10} {'ratio':>7}")
for r in rows:
    if r["daemon"] != "berthd":
        continue
    d = by.get(("dockerd", r["phase"], r["connections"]))
    ds = f"{d['per_sec']:10.0f}" if d else f"{'-':>10}"
    ratio = f"{r['per_sec'] / d['per_sec']:6.2f}x" if d else f"{'-':>7}"
    print(f"{r['phase']:8} {r['connections']:5} {r['per_sec']:10.0f} {ds} {ratio}")
PY
