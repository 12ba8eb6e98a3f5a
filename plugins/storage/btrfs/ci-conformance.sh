#!/usr/bin/env bash
# The conformance storage suite against the btrfs driver, for CI. btrfs
# needs a btrfs filesystem under the case roots, so this makes one: a 1 GiB
# sparse image on a loop device, mkfs.btrfs, mounted under a fresh temp
# dir; the runner's --workdir puts every case root on it. Keeps the JUnit
# report in target/reports/conformance-btrfs.xml, then prints the table,
# then runs the suite again through Docker's plugin protocol (the driver
# served by berth-plugin-host; report conformance-btrfs-remote.xml).
# The filesystem is unmounted, the loop device detached and the image
# deleted on every exit. Run as root from anywhere, after
# `cargo build --workspace`; needs btrfs-progs (mkfs.btrfs) and losetup.
# A run in which any case is skipped fails: on a loop btrfs as root the
# driver has everything it needs, so a skip means it declined wrongly.
set -euo pipefail
cd "$(dirname "$0")/../../.."

bin=target/debug/berth-conformance
plugin=target/debug/libberth_storage_btrfs.so
for f in "$bin" "$plugin"; do
  [ -e "$f" ] || { echo "ci-conformance: $f missing; run cargo build --workspace first" >&2; exit 2; }
done
command -v mkfs.btrfs >/dev/null ||
  { echo "ci-conformance: mkfs.btrfs missing; apt-get install -y btrfs-progs" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/berth-btrfs-conformance.XXXXXX")
dev=""
host=""
cleanup() {
  if [ -n "$host" ]; then kill "$host" 2>/dev/null || true; wait "$host" 2>/dev/null || true; fi
  if mountpoint -q "$tmp/mnt"; then umount --lazy "$tmp/mnt" || echo "ci-conformance: cannot unmount $tmp/mnt" >&2; fi
  if [ -n "$dev" ]; then losetup --detach "$dev" || echo "ci-conformance: cannot detach $dev" >&2; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

truncate -s 1G "$tmp/image"
dev=$(losetup --find --show "$tmp/image")
mkfs.btrfs -q "$dev" >/dev/null
mkdir "$tmp/mnt"
mount -t btrfs "$dev" "$tmp/mnt"
# Case roots go one level below the mount point: the runner's leak check
# looks at and below its work dir, and the mount itself is no leak.
mkdir "$tmp/mnt/work"

mkdir -p target/reports
report=target/reports/conformance-btrfs.xml
"$bin" run --plugin "$plugin" --workdir "$tmp/mnt/work" --format junit --output "$report"
"$bin" run --plugin "$plugin" --workdir "$tmp/mnt/work"
if grep -q '<skipped' "$report"; then
  echo "ci-conformance: cases were skipped on a loop btrfs (see $report)" >&2
  exit 1
fi

# The same suite through Docker's plugin protocol: the driver served out of
# process by berth-plugin-host, its root on the same loop btrfs.
mkdir "$tmp/mnt/host"
target/debug/berth-plugin-host --plugin "$plugin" --socket "$tmp/btrfs.sock" --name btrfs \
  --root "$tmp/mnt/host/root" --run-root "$tmp/host-run" >"$tmp/host.log" 2>&1 &
host=$!
for _ in $(seq 1 100); do [ -S "$tmp/btrfs.sock" ] && break; sleep 0.1; done
[ -S "$tmp/btrfs.sock" ] || { cat "$tmp/host.log"; echo "ci-conformance: berth-plugin-host did not serve btrfs" >&2; exit 1; }
remote_report=target/reports/conformance-btrfs-remote.xml
"$bin" run --remote "unix://$tmp/btrfs.sock" --kind storage --workdir "$tmp/mnt/work" \
  --format junit --output "$remote_report"
if grep -q '<skipped' "$remote_report"; then
  echo "ci-conformance: cases were skipped through the remote transport (see $remote_report)" >&2
  exit 1
fi
