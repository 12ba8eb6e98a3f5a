#!/usr/bin/env bash
# overlay2's native diff beside `tar -c` of the same upper dir (10,000
# files + one 100 MB file), as a ratio: tar's median time / diff's median
# time (1.0 = as fast as tar). Needs root. BERTH_BENCH_DIR picks the
# filesystem (default /var/tmp).
set -euo pipefail
cd "$(dirname "$0")/../../../.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench -q -p berth-storage-overlay2 --bench diff 2>/dev/null | tee "$out"
python3 - "$out" <<'PY'
import re, sys
units = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
med = {}
for line in open(sys.argv[1], encoding="utf-8"):
    m = re.match(r"^[│ ]*[├╰]─ (\S+)(.*)$", line)
    if not m:
        continue
    cols = [c.strip() for c in m.group(2).split("│")]
    if cols[0]:
        v = cols[2].split()
        med[m.group(1)] = float(v[0]) * units[v[1]]
d, t = med.get("native_diff"), med.get("tar_c")
if d and t:
    print(f"\noverlay2 diff: {d*1000:.0f} ms, tar -c: {t*1000:.0f} ms, diff speed = {t/d:.2f}x tar's")
PY
