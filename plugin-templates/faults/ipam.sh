#!/usr/bin/env bash
# Fault injection for the IPAM suite: proves berth-conformance catches an
# IPAM driver whose allocator hands out the gateway address.
#
# Renders the ipam-so template, checks that it passes IP-04 (the case that
# drains a /24 after taking its gateway), then turns off the gateway check
# on the line after the marker `// conformance: never hand out the gateway`
# in src/pool.rs, rebuilds, runs the IPAM suite with `--format json` and
# asserts that IP-04 failed and that its message mentions the gateway.
# Exits non-zero, saying why, otherwise.
#
# Run from the repository root after `cargo build --workspace`.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
conf=$repo/target/debug/berth-conformance
case_id=IP-04
marker='// conformance: never hand out the gateway'
export CARGO_TARGET_DIR=$repo/target/templates
work=$(mktemp -d /tmp/berth-fault-ipam.XXXXXX)
trap 'rm -rf "$work"' EXIT

fail() {
  echo "faults/ipam.sh: FAIL: $*" >&2
  exit 1
}

[ -x "$conf" ] || fail "$conf is missing: run cargo build --workspace first"

crate=$work/fault-ipam
plugin=$CARGO_TARGET_DIR/debug/libfault_ipam.so
plugin-templates/render.sh ipam-so "$crate" fault-ipam faultipam "$repo" >/dev/null
src=$crate/src/pool.rs

# Without the fault the case passes, so a failure below is the fault's.
(cd "$crate" && cargo build -q) || fail "the ipam-so template does not build"
"$conf" run --plugin "$plugin" --only "$case_id" >"$work/clean.txt" ||
  { cat "$work/clean.txt" >&2; fail "$case_id fails even without the fault"; }

# The fault: the line after the marker compares an address with the
# gateway; make that comparison false, so the gateway counts as free.
grep -qF "$marker" "$src" ||
  fail "the marker \"$marker\" is gone from plugin-templates/ipam-so/src/pool.rs; put it back above the gateway check, or update this script"
sed -i "\\|$marker|{n;s/self\\.gateway == Some(ip)/false/}" "$src"
grep -A1 -F "$marker" "$src" | grep -q 'let is_gateway = false;' ||
  fail "could not plant the fault: the line after the marker in src/pool.rs is no longer \"let is_gateway = self.gateway == Some(ip);\"; update the sed in this script"
(cd "$crate" && cargo build -q) || fail "the ipam-so template does not build with the fault planted"

status=0
"$conf" run --plugin "$plugin" --kind ipam --format json --output "$work/report.json" >"$work/table.txt" ||
  status=$?
if [ "$status" -ne 1 ]; then
  cat "$work/table.txt" >&2
  fail "berth-conformance exited $status with the fault planted; expected 1 (a case failed)"
fi
python3 - "$work/report.json" "$case_id" <<'EOF'
import json, sys

path, case_id = sys.argv[1], sys.argv[2]
cases = {c["id"]: c for c in json.load(open(path))["cases"]}
case = cases.get(case_id)
if case is None:
    sys.exit(f"faults/ipam.sh: FAIL: the report has no {case_id}")
if case["result"] != "fail":
    sys.exit(f"faults/ipam.sh: FAIL: {case_id} is {case['result']!r} although the allocator hands out the gateway")
failure = case.get("failure") or {}
text = " ".join(str(failure.get(k, "")) for k in ("step", "expected", "actual")) + " " + str(case.get("message") or "")
if "gateway" not in text.lower():
    sys.exit(f"faults/ipam.sh: FAIL: {case_id} failed, but its message does not mention the gateway: {text}")
others = sorted(i for i, c in cases.items() if c["result"] == "fail" and i != case_id)
print(f"faults/ipam.sh: fault caught: {case_id} failed at {failure.get('step')!r}: "
      f"expected {failure.get('expected')}, got {failure.get('actual')}")
if others:
    print(f"faults/ipam.sh: also failed: {', '.join(others)}")
EOF
