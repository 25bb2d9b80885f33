#!/usr/bin/env bash
# Runs every benchmark in order and rewrites benchmarks/RESULTS.md (about an hour on 2 cores).
#   bash benchmarks/run_all.sh            # from the repository root; REPEATS=5 for more repeats
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -m pip install -q -r benchmarks/requirements.txt
$PY benchmarks/compare.py --repeats "${REPEATS:-3}"        # rewrites RESULTS.md: nnstudy vs peer vs limit
$PY benchmarks/profile_nnstudy.py                          # where nnstudy's time goes (py-spy)
$PY benchmarks/whatif.py --repeats "${REPEATS:-3}"         # nnstudy vs nnstudy without the end-of-study report
$PY benchmarks/pruning.py                                  # none vs median, hyperband, percentile, asha; 40 digits trials
$PY benchmarks/pruning.py --pruners none --whatif percentile25           # percentile with warm-up 2 (patched in)
$PY benchmarks/memory.py                                   # RSS after trial 10 vs 100, nnstudy's defaults
$PY benchmarks/memory.py --trials-per-process 0            # ... all 100 trials in one process
$PY benchmarks/memory.py --trials-per-process 0 --patches unregister-gradients   # ... with the leak fixed
$PY benchmarks/memory_probe.py                             # which layer grows, and why
echo "done: benchmarks/RESULTS.md"
