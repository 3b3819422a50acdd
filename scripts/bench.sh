#!/bin/bash
# npm run bench: install what the benchmarks need (reference tools, debootstrap), build, run, write bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then bash scripts/install-deps.sh; else npm run -s build; fi
exec node dist/bench/run.js "$@"
