#!/usr/bin/env bash
# Runs every micro-benchmark of the sans-IO stack in one go and prints the medians, so the
# ratios in docs/benchmarks.md (reassembly vs memcpy, ...) come from one run on one machine.
# Usage: bash bench/core.sh [criterion args...]   (default: --warm-up-time 1 --measurement-time 3)
# Output: a summary on stdout; criterion's full reports under target/criterion/.
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--warm-up-time 1 --measurement-time 3)

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo "# commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty'), $(rustc --version)"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for b in "braid-wire parse" "braid-core classify" "braid-core reassembly" "braid-core reorder" \
         "braid-core scheduler" "braid-core engine" "braid-core rss" "braid-core replay"; do
  set -- $b
  echo "## cargo bench -p $1 --bench $2 -- ${args[*]}"
  cargo bench -q -p "$1" --bench "$2" -- "${args[@]}" 2>&1 \
    | awk '/^[^ ]/ && !/^(Benchmarking|Found|Gnuplot|Warning)/ {name=$1; skip=0}
           /change:/ {skip=1}
           /time:|thrpt:/ && !skip {sub(/^[^ ]+ +/, ""); sub(/^ +/, ""); print name "  " $0}'
done
echo "## cargo bench -p braid-sim --bench sim_speed"
cargo bench -q -p braid-sim --bench sim_speed 2>&1 | grep -v '^$'
echo "## braid demo (default scenario), wall time"
cargo build -q --release -p braid
for _ in 1 2 3; do cargo run -q --release -- demo -q | tail -1; done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
