#!/usr/bin/env bash
# Fault injection for the storage suite: proves berth-conformance catches a
# storage driver that drops extended attributes when it copies a layer.
#
# Renders the storage-so template, checks that it passes ST-14 (the case
# that checks `user.*` xattrs and `security.capability`), then deletes the
# line marked `// conformance: copies extended attributes` in src/copy.rs,
# rebuilds, runs ST-14 again with `--format json` and asserts that exactly
# ST-14 failed and that its message names the lost xattrs. Exits non-zero,
# saying why, otherwise.
#
# Run from the repository root after `cargo build --workspace`.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
conf=$repo/target/debug/berth-conformance
case_id=ST-14
marker='// conformance: copies extended attributes'
export CARGO_TARGET_DIR=$repo/target/templates
work=$(mktemp -d /tmp/berth-fault-storage.XXXXXX)
trap 'rm -rf "$work"' EXIT

fail() {
  echo "faults/storage.sh: FAIL: $*" >&2
  exit 1
}

[ -x "$conf" ] || fail "$conf is missing: run cargo build --workspace first"

crate=$work/faulty-store
plugin=$CARGO_TARGET_DIR/debug/libfaulty_store.so
plugin-templates/render.sh storage-so "$crate" faulty-store faultyfs "$repo" >/dev/null
build() {
  (cd "$crate" && cargo build -q) >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; fail "$1: the build failed"; }
}

# Control: the template as shipped passes the case, so a failure below is
# the fault's doing.
build "the template as shipped"
"$conf" run --plugin "$plugin" --only "$case_id" --format json --output "$work/control.json" >"$work/control.txt" ||
  { cat "$work/control.txt" >&2; fail "the template as shipped does not pass $case_id"; }

# Plant the fault: the one marked line is the only place xattrs are copied.
found=$(grep -c -F "$marker" "$crate/src/copy.rs" || true)
[ "$found" = 1 ] || fail "expected exactly one line marked '$marker' in storage-so/src/copy.rs, found $found"
sed -i "\\|$marker|d" "$crate/src/copy.rs"
! grep -q -F "$marker" "$crate/src/copy.rs" || fail "sed did not remove the marked line"
build "the faulty driver"

status=0
"$conf" run --plugin "$plugin" --only "$case_id" --format json --output "$work/report.json" >"$work/report.txt" || status=$?
[ "$status" = 1 ] || { cat "$work/report.txt" >&2; fail "berth-conformance exited $status, expected 1 (a case failed)"; }

python3 - "$work/report.json" "$case_id" <<'EOF' || fail "the report is not what a dropped-xattr fault must give (see above)"
import json, sys

report, want = json.load(open(sys.argv[1])), sys.argv[2]
cases = report["cases"]
failed = [c["id"] for c in cases if c["result"] == "fail"]
problems = []
if failed != [want]:
    problems.append(f"failed cases are {failed}, expected exactly [{want}]")
if any(c["result"] not in ("pass", "fail") for c in cases):
    problems.append("a case did not run: " + ", ".join(f"{c['id']} {c['result']}" for c in cases))
message = next((c.get("message", "") for c in cases if c["id"] == want), "")
if "xattr" not in message or "user." not in message:
    problems.append(f"the {want} message does not name the lost xattrs: {message!r}")
for p in problems:
    print(f"faults/storage.sh: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"{want} failed as it must: {message[:160]}...")
EOF
echo "faults/storage.sh: OK: dropping xattrs in a layer copy is caught by $case_id"
