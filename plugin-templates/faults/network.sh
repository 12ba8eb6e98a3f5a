#!/usr/bin/env bash
# Fault injection for the network suite: proves berth-conformance catches a
# network driver whose DeleteEndpoint leaves the endpoint's veth behind.
#
# Renders the network-so template, checks that it passes NW-08 (deleting an
# endpoint twice, or one never created, succeeds and leaves no veth end),
# then deletes the line marked `// conformance: delete the veth` in
# src/driver.rs (the only place delete_endpoint deletes the pair), rebuilds,
# runs NW-08 again with `--format json` and asserts that exactly NW-08
# failed and that its message names the veth left on the host. Exits
# non-zero, saying why, otherwise. Removes the veth the fault leaves.
#
# Run as root from the repository root after `cargo build --workspace`.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
conf=$repo/target/debug/berth-conformance
case_id=NW-08
marker='// conformance: delete the veth'
export CARGO_TARGET_DIR=$repo/target/templates
work=$(mktemp -d /tmp/berth-fault-network.XXXXXX)

fail() {
  echo "faults/network.sh: FAIL: $*" >&2
  exit 1
}

# The host's links now; anything with the driver's prefixes that appears
# later is the fault's (or a failed run's) and is removed on exit.
links() { ip -o link show | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }' | sort; }
links >"$work/links.before"
prefixes='^(vh-|vp-)'
leftovers() { links | comm -13 "$work/links.before" - | grep -E "$prefixes" || true; }
cleanup() {
  for l in $(leftovers); do
    ip link del dev "$l" 2>/dev/null && echo "faults/network.sh: removed leftover link $l" || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || fail "run as root: the network cases make namespaces and links"
[ -x "$conf" ] || fail "$conf is missing: run cargo build --workspace first"

crate=$work/faulty-net
plugin=$CARGO_TARGET_DIR/debug/libfaulty_net.so
plugin-templates/render.sh network-so "$crate" faulty-net faultynet "$repo" >/dev/null
# The prefixes the template names its veth ends with (src/config.rs).
for p in HOST_PREFIX PEER_PREFIX; do
  grep -q "pub const $p: &str = \"v[hp]-\";" "$crate/src/config.rs" ||
    fail "network-so/src/config.rs no longer names veth ends vh-/vp- ($p): update this script"
done
build() {
  (cd "$crate" && cargo build -q) >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; fail "$1: the build failed"; }
}

# Control: the template as shipped passes the case, so a failure below is
# the fault's doing.
build "the template as shipped"
"$conf" run --plugin "$plugin" --only "$case_id" --format json --output "$work/control.json" >"$work/control.txt" ||
  { cat "$work/control.txt" >&2; fail "the template as shipped does not pass $case_id"; }
[ -z "$(leftovers)" ] || fail "the template as shipped left links behind: $(leftovers | tr '\n' ' ')"

# Plant the fault: without the marked line, delete_endpoint forgets the
# endpoint and says it is deleted, but its veth pair stays on the host.
found=$(grep -c -F "$marker" "$crate/src/driver.rs" || true)
[ "$found" = 1 ] || fail "expected exactly one line marked '$marker' in network-so/src/driver.rs, found $found"
sed -i "\\|$marker|d" "$crate/src/driver.rs"
! grep -q -F "$marker" "$crate/src/driver.rs" || fail "sed did not remove the marked line"
build "the faulty driver"

status=0
"$conf" run --plugin "$plugin" --only "$case_id" --format json --output "$work/report.json" >"$work/report.txt" || status=$?
[ "$status" = 1 ] || { cat "$work/report.txt" >&2; fail "berth-conformance exited $status, expected 1 (a case failed)"; }
left=$(leftovers | tr '\n' ' ')
[ -n "$left" ] || fail "the faulty driver left no vh-/vp- link on the host: the fault was not planted"

python3 - "$work/report.json" "$case_id" $left <<'EOF' || fail "the report is not what a leaked-veth fault must give (see above)"
import json, sys

report, want, left = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3:]
cases = report["cases"]
failed = [c["id"] for c in cases if c["result"] == "fail"]
problems = []
if failed != [want]:
    problems.append(f"failed cases are {failed}, expected exactly [{want}]")
if any(c["result"] not in ("pass", "fail") for c in cases):
    problems.append("a case did not run: " + ", ".join(f"{c['id']} {c['result']}: {c.get('message', '')}" for c in cases))
message = next((c.get("message", "") for c in cases if c["id"] == want), "")
host_ends = [l for l in left if l.startswith("vh-")]
if not host_ends:
    problems.append(f"no host end (vh-…) among the leftover links {left}")
for link in host_ends:
    if link not in message:
        problems.append(f"the {want} message does not name the leftover link {link}: {message!r}")
for p in problems:
    print(f"faults/network.sh: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"{want} failed as it must: {message[:200]}")
EOF
echo "faults/network.sh: OK: a DeleteEndpoint that leaves its veth behind is caught by $case_id"
