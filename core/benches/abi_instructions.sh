#!/usr/bin/env bash
# Instructions per driver call, linked `dyn` vs through the ABI (.so),
# counted by callgrind: repeatable on a noisy machine, unlike timings.
# Needs valgrind (apt-get install -y valgrind).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
cargo build --release -q -p berth-storage-vfs -p berth-fixture-faulty
bin=$(cargo bench -p berth-core --bench abi_instructions --no-run 2>&1 | grep -o 'target/release/deps/abi_instructions-[0-9a-f]*' | head -1)
n=20000
count() { # case n -> instructions
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" target/release 2>&1 >/dev/null \
    | awk '/Collected/ { print $4 }'
}
printf '%-10s %14s %14s %8s\n' method dyn abi ratio
for m in trivial exists metadata; do
  d=$(( ($(count "$m-dyn" $n) - $(count "$m-dyn" 0)) / n ))
  a=$(( ($(count "$m-abi" $n) - $(count "$m-abi" 0)) / n ))
  awk -v m="$m" -v d="$d" -v a="$a" 'BEGIN { printf "%-10s %9d instr %9d instr %7.2fx\n", m, d, a, a / (d > 0 ? d : 1) }'
done
