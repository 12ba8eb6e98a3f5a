#!/usr/bin/env bash
# Runs the ABI-call benchmark and prints, for each pair, the median of the
# call through the ABI (.so) over the plain `dyn` call of the same driver.
# Budget (DESIGN.md): within 2x.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p berth-storage-vfs -p berth-fixture-faulty
cargo bench -q -p berth-core --bench abi_call 2>/dev/null | tee /tmp/berth-abi-bench.txt
python3 - /tmp/berth-abi-bench.txt <<'PY'
import re, sys
units = {"ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
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
for g in sorted({g for g, _ in med}):
    d, a = med.get((g, "dyn_linked")), med.get((g, "abi_so"))
    if d and a:
        print(f"{g:14} dyn {d:10.1f} ns   abi {a:10.1f} ns   overhead {a-d:8.1f} ns   ratio {a/d:6.2f}x")
    w, wl = med.get((g, "abi_so_call_wrapper")), med.get((g, "dyn_linked_call_wrapper"))
    if w and wl:
        print(f"{g:14} as the daemon calls it (deadline, worker, counters): dyn {wl:10.1f} ns   abi {w:10.1f} ns   ratio {w/wl:6.2f}x")
PY
