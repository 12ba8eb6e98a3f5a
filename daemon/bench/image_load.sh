#!/usr/bin/env bash
# Image load, berthd beside Debian's dockerd as the reference: a one-layer
# `docker save` archive holding 10,000 small files and one 100 MB file is
# loaded with `berth image load` into berthd on overlay2, and the same layer
# tar is imported with `docker import` into a hand-started dockerd on
# overlay2. Each is timed three times on a fresh image (removed between
# runs, so every layer is applied again); the medians and their ratio are
# printed.
#
#   bash daemon/bench/image_load.sh
#   NO_DOCKER=1: berthd only; SKIP_BUILD=1: use the existing release build;
#   BENCH_DIR=DIR: where the temp roots go (default /var/tmp; must support
#   overlayfs upper dirs, so not an overlay itself)
#
# Target (issue 5): about the `docker import` figure (about 1.0 s on this
# machine kind). Everything runs under a temp dir, removed afterwards;
# dockerd runs with --iptables=false --ip-forward=false --bridge=none and
# the FORWARD policy is restored in any case.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p berth-daemon -p berth-cli -p berth-storage-overlay2 \
  -p berth-storage-vfs -p berth-network-none -p berth-network-host -p berth-ipam-default -p berth-volume-local
rel=$PWD/target/release
tmp=$(mktemp -d "${BENCH_DIR:-/var/tmp}/berth-imgbench.XXXXXX")
pids=()
policy=$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/ {print $3}' || true)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$policy" ] && [ "$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/ {print $3}')" != "$policy" ]; then
    iptables -P FORWARD "$policy"
  fi
  grep -q "$tmp" /proc/self/mountinfo && grep "$tmp" /proc/self/mountinfo | awk '{print $5}' | sort -r |
    xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

wait_sock() { for _ in $(seq 1 300); do [ -S "$1" ] && curl -sf --unix-socket "$1" http://x/_ping >/dev/null && return 0; sleep 0.1; done; echo "no answer on $1" >&2; exit 1; }
now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }

# The layer and the archive around it (Docker 25 layout: manifest.json and
# blobs/sha256/<hex>), with python3's tarfile.
python3 - "$tmp" <<'PY'
import hashlib, io, json, os, random, sys, tarfile
tmp = sys.argv[1]
rng = random.Random(5)
layer = os.path.join(tmp, "layer.tar")
with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as t:
    def add_dir(name):
        ti = tarfile.TarInfo(name); ti.type = tarfile.DIRTYPE; ti.mode = 0o755; ti.mtime = 1700000000
        t.addfile(ti)
    add_dir("data")
    for d in range(100):
        add_dir(f"data/d{d:03}")
        for f in range(100):
            body = rng.randbytes(rng.randint(64, 4096))
            ti = tarfile.TarInfo(f"data/d{d:03}/f{f:03}"); ti.size = len(body); ti.mode = 0o644; ti.mtime = 1700000000
            t.addfile(ti, io.BytesIO(body))
    big = os.urandom(100 * 1000 * 1000)
    ti = tarfile.TarInfo("big.bin"); ti.size = len(big); ti.mode = 0o644; ti.mtime = 1700000000
    t.addfile(ti, io.BytesIO(big))
h = hashlib.sha256()
with open(layer, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
diff_id = h.hexdigest()
config = json.dumps({
    "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z", "config": {},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id]},
}).encode()
config_hex = hashlib.sha256(config).hexdigest()
manifest = json.dumps([{"Config": f"blobs/sha256/{config_hex}", "RepoTags": ["bench:load"],
                        "Layers": [f"blobs/sha256/{diff_id}"]}]).encode()
with tarfile.open(os.path.join(tmp, "image.tar"), "w") as t:
    for name, data in [(f"blobs/sha256/{config_hex}", config), ("manifest.json", manifest)]:
        ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = 0o644
        t.addfile(ti, io.BytesIO(data))
    t.add(layer, arcname=f"blobs/sha256/{diff_id}")
PY
echo "archive: $(du -h "$tmp/image.tar" | cut -f1) (10,000 small files + one 100 MB file, one layer)"

# berthd on overlay2.
sed -e "s#plugin_dirs = .*#plugin_dirs = [\"$rel\"]#" -e 's#^driver = "vfs"#driver = "overlay2"#' \
  core/src/default.toml >"$tmp/berth.toml"
printf '\n[[plugin]]\nname = "overlay2"\npath = "libberth_storage_overlay2.so"\n' >>"$tmp/berth.toml"
"$rel/berthd" --config "$tmp/berth.toml" --root "$tmp/b/root" --exec-root "$tmp/b/run" \
  --socket "$tmp/b/berth.sock" --log-level error &
pids+=($!)
wait_sock "$tmp/b/berth.sock"
berth() { "$rel/berth" --host "unix://$tmp/b/berth.sock" "$@"; }
driver=$(curl -sf --unix-socket "$tmp/b/berth.sock" http://x/info | python3 -c 'import json,sys; print(json.load(sys.stdin)["Driver"])')
[ "$driver" = overlay2 ] || { echo "berthd runs $driver, not overlay2" >&2; exit 1; }

b=()
for i in 1 2 3; do
  sync
  t0=$(now)
  berth image load -q -i "$tmp/image.tar" >/dev/null
  t1=$(now)
  b+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')")
  berth image rm bench:load >/dev/null
done
bm=$(median "${b[@]}")
printf 'berth image load (overlay2): median %.3f s  (runs: %s)\n' "$bm" "$(printf '%.3f ' "${b[@]}")"

if [ -z "${NO_DOCKER:-}" ] && command -v dockerd >/dev/null; then
  mkdir -p "$tmp/d"
  dockerd --data-root "$tmp/d/root" --exec-root "$tmp/d/run" -H "unix://$tmp/d/docker.sock" \
    --pidfile "$tmp/d/docker.pid" --storage-driver overlay2 --iptables=false --ip6tables=false \
    --ip-forward=false --bridge=none --log-level=error >"$tmp/d/log" 2>&1 &
  pids+=($!)
  wait_sock "$tmp/d/docker.sock"
  dk() { docker -H "unix://$tmp/d/docker.sock" "$@"; }
  export DOCKER_CONFIG="$tmp/d/config"
  d=()
  for i in 1 2 3; do
    sync
    t0=$(now)
    dk import "$tmp/layer.tar" bench:import >/dev/null
    t1=$(now)
    d+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')")
    dk rmi bench:import >/dev/null
  done
  dm=$(median "${d[@]}")
  printf 'docker import (overlay2):    median %.3f s  (runs: %s)\n' "$dm" "$(printf '%.3f ' "${d[@]}")"
  printf 'ratio berth/docker: %.2f\n' "$(awk -v a="$bm" -v b="$dm" 'BEGIN {print a / b}')"
else
  echo "dockerd not installed (apt-get install -y docker.io): no reference figure" >&2
fi
