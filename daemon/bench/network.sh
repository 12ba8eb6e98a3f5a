#!/usr/bin/env bash
# Networking through the daemons' HTTP APIs, berthd beside Debian's dockerd
# as the reference, in the same run: N times each (default 50, after 3
# untimed warm-up rounds), p50 and p90 in ms, and the berthd/dockerd ratios.
#
#   bash daemon/bench/network.sh [N]
#   NO_DOCKER=1: berthd only; SKIP_BUILD=1: use the existing release build;
#   BENCH_DIR=DIR: where the temp roots go (default /var/tmp)
#
# Measured, each call on its own, over one kept-alive connection by the same
# python3 client for both daemons (daemon/bench/network_calls.py):
#   * bridge network create (`POST /networks/create`, Driver bridge, an
#     explicit 10.23x.y.0/24 subnet) and, separately, its delete
#     (`DELETE /networks/{id}`), while one other bridge network exists;
#   * endpoint connect and disconnect (`POST /networks/{id}/connect` and
#     `/disconnect`, {"Container": …}): for berthd a sandbox made once with
#     `POST /sandboxes/create`, for dockerd a running container (a rootfs
#     with /usr/bin/sleep and its libraries, `docker import`ed, run with
#     `--network none` and then taken off `none`, since dockerd refuses to
#     connect a container that is on `none`).
# berthd uses its bridge driver with nftables (its own table, named for this
# run), dockerd its default iptables firewall (started without
# --iptables=false; --bridge=none, the networks come from the API).
# Targets (issue 6): bridge network create <= 5 ms; endpoint join and
# leave <= 5 ms each.
#
# Nothing sends traffic. Names carry the pid (bridges bb<pid>… for berthd,
# bd<pid>… for dockerd), the subnets come from two 10.23x.0.0/16 ranges no
# route on the machine overlaps. The daemons run one after the other, each
# on a fresh root under a temp dir. Afterwards, also on failure: the
# container and both daemons are stopped, mounts under the temp dir
# unmounted, bridges of this run and their ports deleted, the nftables table
# of this run deleted, dockerd's iptables rules and DOCKER* chains removed
# (chains only when they did not exist before, likewise the ip nat table),
# and the FORWARD policy, ip_forward and bridge-nf-call-ip(6)tables put back.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-50}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p berth-daemon -p berth-cli -p berth-storage-vfs \
  -p berth-network-none -p berth-network-host -p berth-network-bridge -p berth-network-macvlan \
  -p berth-ipam-default -p berth-ipam-null -p berth-volume-local
rel=$PWD/target/release
client=$PWD/daemon/bench/network_calls.py
for f in berthd libberth_network_bridge.so libberth_ipam_default.so; do
  [ -e "$rel/$f" ] || { echo "missing $rel/$f (build first, without SKIP_BUILD)" >&2; exit 1; }
done
command -v nft >/dev/null || { echo "nft not installed (apt-get install -y nftables): berthd's bridge driver needs it" >&2; exit 1; }

tmp=$(mktemp -d "${BENCH_DIR:-/var/tmp}/berth-netbench.XXXXXX")
bb=bb$$ bd=bd$$ table=berthbench$$ img=berthbench-sleep:$$
pids=() cpid=
dsock=$tmp/d/docker.sock
docker_cli=$(command -v /usr/bin/docker docker 2>/dev/null | head -n1 || true)

# What is put back afterwards.
policy=$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/ {print $3}' || true)
sysctls=(net/ipv4/ip_forward net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables)
declare -A sysctl_before=()
for s in "${sysctls[@]}"; do [ -r "/proc/sys/$s" ] && sysctl_before[$s]=$(cat "/proc/sys/$s"); done
docker_chains=(DOCKER DOCKER-ISOLATION-STAGE-1 DOCKER-ISOLATION-STAGE-2 DOCKER-USER)
declare -A chain_before=()
for t in filter nat; do
  for c in "${docker_chains[@]}"; do iptables -t "$t" -S "$c" >/dev/null 2>&1 && chain_before[$t/$c]=1; done
done
nat_before=$(nft list table ip nat >/dev/null 2>&1 && echo 1 || true)

stop_pid() { # pid: TERM, then KILL after 30 s
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  set +e
  note() { echo "cleanup: $*" >&2; }
  if [ -n "$docker_cli" ] && [ -S "$dsock" ]; then timeout 60 "$docker_cli" -H "unix://$dsock" rm -f "berthbench$$" >/dev/null 2>&1; fi
  for p in "${pids[@]}"; do stop_pid "$p"; done
  # The container's process and containerd's shims (their command lines
  # name this run's temp dir), had dockerd not stopped them.
  if [ -n "$cpid" ] && kill -0 "$cpid" 2>/dev/null; then note "killing container process $cpid"; kill -9 "$cpid"; fi
  for p in $(ps -eo pid=,args= | awk -v t="$tmp/" 'index($0, t) {print $1}'); do
    [ "$p" != $$ ] && kill -0 "$p" 2>/dev/null && { note "killing leftover process $p"; kill -9 "$p"; }
  done
  grep -F " $tmp/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  for br in $(ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | grep -E "^($bb|$bd)(a|x[0-9]+)\$"); do
    for port in $(ip -o link show master "$br" | awk -F': ' '{print $2}' | cut -d@ -f1); do ip link del "$port"; done
    note "deleting bridge $br"; ip link del "$br"
  done
  if nft list table inet "$table" >/dev/null 2>&1; then note "deleting nftables table inet $table"; nft delete table inet "$table"; fi
  for t in filter nat; do
    # Rules naming this run's bridges, then dockerd's own chains and the
    # jumps to them when they are new.
    iptables -t "$t" -S 2>/dev/null | grep -E "^-A .* ($bd)(a|x[0-9]+)( |\$)" | while read -r rule; do
      iptables -t "$t" ${rule/#-A/-D}
    done
    for c in "${docker_chains[@]}"; do
      [ -z "${chain_before[$t/$c]:-}" ] && iptables -t "$t" -S "$c" >/dev/null 2>&1 || continue
      iptables -t "$t" -S 2>/dev/null | grep -E -- "^-A [A-Z]+ .*-j $c( |\$)" | while read -r rule; do
        iptables -t "$t" ${rule/#-A/-D}
      done
      iptables -t "$t" -F "$c"
    done
    for c in "${docker_chains[@]}"; do
      [ -z "${chain_before[$t/$c]:-}" ] && iptables -t "$t" -S "$c" >/dev/null 2>&1 && iptables -t "$t" -X "$c"
    done
  done
  if [ -z "$nat_before" ] && nft list table ip nat >/dev/null 2>&1 && ! iptables -t nat -S | grep -qE '^-(A|N) '; then
    nft delete table ip nat
  fi
  if [ -n "$policy" ] && [ "$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/ {print $3}')" != "$policy" ]; then
    note "FORWARD policy back to $policy"; iptables -P FORWARD "$policy"
  fi
  for s in "${!sysctl_before[@]}"; do
    [ "$(cat "/proc/sys/$s" 2>/dev/null)" = "${sysctl_before[$s]}" ] || { note "$s back to ${sysctl_before[$s]}"; echo "${sysctl_before[$s]}" >"/proc/sys/$s"; }
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_sock() { for _ in $(seq 1 300); do [ -S "$1" ] && curl -sf --unix-socket "$1" http://x/_ping >/dev/null && return 0; sleep 0.1; done; echo "no answer on $1" >&2; exit 1; }
api() { curl -sf --unix-socket "$1" -H 'Content-Type: application/json' -X "$2" ${4:+-d "$4"} "http://x$3"; }

# Two /16s in 10.230-10.239 that no route (any table) overlaps.
read -r sb sd < <(ip -4 -o route show table all | python3 -c '
import ipaddress, sys
used = []
for line in sys.stdin:
    for w in line.split()[:2]:
        try:
            used.append(ipaddress.ip_network(w, strict=False)); break
        except ValueError:
            pass
free = [x for x in range(230, 240) if not any(ipaddress.ip_network(f"10.{x}.0.0/16").overlaps(u) for u in used)]
print(*free[:2])')
[ -n "${sd:-}" ] || { echo "fewer than two 10.23x.0.0/16 ranges are free of routes: not run" >&2; exit 1; }

echo "network API, $n rounds each after 3 warm-up rounds; berthd: bridge driver, nftables table inet $table," \
  "10.$sb.0.0/16; dockerd: iptables, 10.$sd.0.0/16"
echo "host: $(nproc) CPUs, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg) (other load skews the figures)"

# berthd: the built-in plugins, the bridge driver on a table of its own.
sed -e "s#plugin_dirs = .*#plugin_dirs = [\"$rel\"]#" \
  -e "s#^path = \"libberth_network_bridge.so\"#&\noptions = { table = \"$table\" }#" \
  core/src/default.toml >"$tmp/berth.toml"
grep -q "table = \"$table\"" "$tmp/berth.toml" || { echo "could not set the bridge driver's table in the config" >&2; exit 1; }
"$rel/berthd" --config "$tmp/berth.toml" --root "$tmp/b/root" --exec-root "$tmp/b/run" \
  --socket "$tmp/b/berth.sock" --log-level error &
pids+=($!)
wait_sock "$tmp/b/berth.sock"
sandbox=$(api "$tmp/b/berth.sock" POST /sandboxes/create "{\"Name\":\"${bb}s\"}" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["Id"])')
python3 "$client" measure "$tmp/b/berth.sock" berthd "$bb" "10.$sb" "$n" "$sandbox" | tee -a "$tmp/results"
api "$tmp/b/berth.sock" DELETE "/sandboxes/$sandbox" >/dev/null
stop_pid "${pids[0]}"
nft list table inet "$table" >/dev/null 2>&1 && echo "note: berthd left its nftables table inet $table behind (removed at cleanup)" >&2
ip -o link show type bridge | grep -q " $bb" && echo "note: berthd left bridges $bb* behind (removed at cleanup)" >&2

if [ -z "${NO_DOCKER:-}" ] && command -v dockerd >/dev/null; then
  mkdir -p "$tmp/d"
  dockerd --data-root "$tmp/d/root" --exec-root "$tmp/d/run" -H "unix://$dsock" \
    --pidfile "$tmp/d/docker.pid" --bridge=none --log-level=error >"$tmp/d/log" 2>&1 &
  pids+=($!)
  wait_sock "$dsock"
  echo "dockerd $(api "$dsock" GET /version | python3 -c 'import json, sys; print(json.load(sys.stdin)["Version"])'), storage driver" \
    "$(api "$dsock" GET /info | python3 -c 'import json, sys; print(json.load(sys.stdin)["Driver"])')"
  # A running container: /usr/bin/sleep, its libraries and the loader.
  container=
  why=
  if [ -z "$docker_cli" ]; then
    why="no docker client"
  elif ! command -v containerd >/dev/null || ! command -v runc >/dev/null; then
    why="containerd or runc not installed"
  else
    mkdir -p "$tmp/rootfs/usr/bin"
    cp /usr/bin/sleep "$tmp/rootfs/usr/bin/"
    for lib in $(ldd /usr/bin/sleep | grep -o '/[^ ]*'); do
      mkdir -p "$tmp/rootfs$(dirname "$lib")"
      cp -L "$lib" "$tmp/rootfs$lib"
    done
    if ! out=$(tar -C "$tmp/rootfs" -cf - . | "$docker_cli" -H "unix://$dsock" import - "$img" 2>&1) ||
      ! out=$("$docker_cli" -H "unix://$dsock" run -d --name "berthbench$$" --network none "$img" /usr/bin/sleep 100000 2>&1); then
      why="docker import/run failed: $(echo "$out" | tail -n1)"
    else
      container=$out
      cpid=$("$docker_cli" -H "unix://$dsock" inspect -f '{{.State.Pid}}' "$container")
      # dockerd connects nothing to a container that is on `none`.
      if ! out=$(api "$dsock" POST /networks/none/disconnect "{\"Container\":\"$container\"}" 2>&1); then
        why="could not take the container off network none: $out"
        container=
      fi
    fi
  fi
  [ -z "$why" ] || echo "dockerd cannot run a container here ($why): no endpoint connect/disconnect reference" >&2
  python3 "$client" measure "$dsock" dockerd "$bd" "10.$sd" "$n" $container | tee -a "$tmp/results" ||
    echo "dockerd: measurement failed (above); its figures are missing" >&2
else
  echo "dockerd not measured (NO_DOCKER set, or not installed: apt-get install -y docker.io)" >&2
fi

echo
python3 "$client" table "$tmp/results"
