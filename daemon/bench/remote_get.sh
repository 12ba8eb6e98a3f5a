#!/usr/bin/env bash
# What going out of process costs: a volume driver's `Get` through the
# daemon when the driver is remote vs in-process, and the plugin called
# directly, for berthd and, as the reference, Debian's dockerd.
#
#   bash daemon/bench/remote_get.sh [N]        # N requests per measurement (20,000)
#   NO_DOCKER=1: berthd only; SKIP_BUILD=1: use the existing release build
#
# The remote driver is berth's own `local` driver served out of process by
# berth-plugin-host on a unix socket; berthd names it in its config, dockerd
# finds it in /run/docker/plugins. The in-process reference is each
# daemon's own `local` driver. Target (DESIGN.md, issue 4): berthd adds
# <= 60 us p50 per remote call (dockerd adds about 310 us on this machine
# kind). Everything runs under a temp dir, removed afterwards; the FORWARD
# policy is restored.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-20000}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q --workspace --bins --lib --examples
rel=$PWD/target/release
tmp=$(mktemp -d /var/tmp/berth-remotebench.XXXXXX)
name=berthbench$$
dsock=/run/docker/plugins/$name.sock
pids=()
policy=$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/ {print $3}' || true)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$policy" ] && [ "$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/ {print $3}')" != "$policy" ]; then
    iptables -P FORWARD "$policy"
  fi
  rm -f "$dsock"
  rm -rf "$tmp"
}
trap cleanup EXIT
wait_sock() { for _ in $(seq 1 300); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "no socket $1" >&2; exit 1; }
ping_sock() { for _ in $(seq 1 300); do curl -sf --unix-socket "$1" http://x/_ping >/dev/null && return 0; sleep 0.1; done; echo "no answer on $1" >&2; exit 1; }
post() { curl -sf --unix-socket "$1" -H 'Content-Type: application/json' -d "$3" "http://x$2" >/dev/null; }

# The remote driver, for berthd.
"$rel/berth-plugin-host" --plugin "$rel/libberth_volume_local.so" --socket "$tmp/remote.sock" \
  --name remote --root "$tmp/h/root" --run-root "$tmp/h/run" >/dev/null &
pids+=($!)
wait_sock "$tmp/remote.sock"
sed "s#plugin_dirs = .*#plugin_dirs = [\"$rel\"]#" core/src/default.toml >"$tmp/berth.toml"
printf '\n[[plugin]]\nname = "remote"\nremote = "unix://%s"\n' "$tmp/remote.sock" >>"$tmp/berth.toml"
"$rel/berthd" --config "$tmp/berth.toml" --root "$tmp/b/root" --exec-root "$tmp/b/run" \
  --socket "$tmp/b/berth.sock" --log-level error &
pids+=($!)
ping_sock "$tmp/b/berth.sock"
post "$tmp/b/berth.sock" /volumes/create '{"Name":"rvol","Driver":"remote"}'
post "$tmp/b/berth.sock" /volumes/create '{"Name":"lvol","Driver":"local"}'
"$rel/examples/remote_get" "$tmp/remote.sock" "$tmp/b/berth.sock" rvol lvol "$n" berthd | tee -a "$tmp/results"

if [ -z "${NO_DOCKER:-}" ] && command -v dockerd >/dev/null; then
  mkdir -p /run/docker/plugins "$tmp/d"
  "$rel/berth-plugin-host" --plugin "$rel/libberth_volume_local.so" --socket "$dsock" \
    --name "$name" --root "$tmp/dh/root" --run-root "$tmp/dh/run" >/dev/null &
  pids+=($!)
  wait_sock "$dsock"
  dockerd --data-root "$tmp/d/root" --exec-root "$tmp/d/run" -H "unix://$tmp/d/docker.sock" \
    --pidfile "$tmp/d/docker.pid" --iptables=false --ip-forward=false --bridge=none --log-level=error \
    >"$tmp/d/log" 2>&1 &
  pids+=($!)
  ping_sock "$tmp/d/docker.sock"
  post "$tmp/d/docker.sock" /volumes/create "{\"Name\":\"rvol\",\"Driver\":\"$name\"}"
  post "$tmp/d/docker.sock" /volumes/create '{"Name":"lvol","Driver":"local"}'
  "$rel/examples/remote_get" "$dsock" "$tmp/d/docker.sock" rvol lvol "$n" dockerd | tee -a "$tmp/results"
else
  echo "dockerd not installed (apt-get install -y docker.io): no reference figures" >&2
fi

python3 - "$tmp/results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {(r["daemon"], r["what"]): r for r in rows}
print(f"{'':28} {'berthd':>8} {'dockerd':>8}   (p50, us)")
for what in ["plugin_direct", "inspect_in_process", "inspect_remote", "added_by_remote"]:
    cells = []
    for d in ["berthd", "dockerd"]:
        r = by.get((d, what))
        cells.append(f"{r['p50_us']:8}" if r else f"{'-':>8}")
    print(f"{what:28} {cells[0]} {cells[1]}")
for d in ["berthd", "dockerd"]:
    r = by.get((d, "added_by_remote"))
    if r:
        print(f"{d}: a remote Get costs {r['p50_us']} us more than in-process; "
              f"{r['daemon_share_p50_us']} us of it is the daemon's own (the rest is the plugin's round trip)")
PY
