#!/usr/bin/env bash
# Times berth's layer apply against GNU `tar -x` of the same archive (plain
# and gzip; see layer_apply.rs) and prints, for each, apply's speed as a
# fraction of tar's (tar median time / apply median time).
# Budget (DESIGN.md): at least 0.90. BERTH_BENCH_DIR=/dev/shm measures
# without the disk.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench -q -p berth-core --bench layer_apply 2>/dev/null | tee "$out"
python3 - "$out" <<'PY'
import re, sys
units = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
group, med = None, {}
for line in open(sys.argv[1], encoding="utf-8"):
    m = re.match(r"^[│ ]*[├╰]─ (\S+)(.*)$", line)
    if not m:
        continue
    name, rest = m.group(1), m.group(2)
    cols = [c.strip() for c in rest.split("│")]
    if not cols[0]:                      # a group header
        group = name
        continue
    median = cols[2].split()             # fastest │ slowest │ median
    med[(group, name)] = float(median[0]) * units[median[1]]
print()
worst = None
for g in sorted({g for g, _ in med}):
    a, t = med.get((g, "apply")), med.get((g, "tar_x"))
    if a and t:
        ratio = t / a
        worst = ratio if worst is None else min(worst, ratio)
        print(f"{g:6} apply {a*1e3:8.1f} ms   tar -x {t*1e3:8.1f} ms   apply speed = {ratio:5.2f} x tar -x")
if worst is not None:
    print(f"budget >= 0.90 x tar -x: {'met' if worst >= 0.90 else 'NOT met'} (worst {worst:.2f})")
PY
