#!/usr/bin/env bash
# Runs every benchmark in order; each replaces its section of benchmarks/RESULTS.md (about 75 minutes on 2 cores).
#   bash benchmarks/run_all.sh            # from the repository root; REPEATS=5 for more repeats
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores (the benchmarks want a quiet machine)"
$PY -m pip install -q -r benchmarks/requirements.txt
$PY benchmarks/compare.py --repeats "${REPEATS:-3}"   # nnstudy (3 ways) vs peer vs limit
$PY benchmarks/workers.py --repeats "${REPEATS:-3}"   # 16 configurations: --workers 1 vs the default (every core)
$PY benchmarks/reuse.py                               # 150 trials of 2 epochs: compiled models reused vs not
$PY benchmarks/pruning.py                             # 40 digits trials: none vs median, hyperband, percentile (warm-up 5, 2), asha
$PY benchmarks/memory.py --n-trials 500              # RSS after trial 10 vs 500, all in one process (--workers 1)
$PY benchmarks/scale.py --n-trials 1000              # 1000 1-epoch trials: per-trial overhead per hundred; report, trials, best, UI
echo "done: benchmarks/RESULTS.md"
