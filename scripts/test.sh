#!/bin/bash
# The whole test suite: installs what it needs, builds, then runs every tier in order:
#   unit → reference (differential vs the real tools) → privileged (root: mounts) → vm (QEMU guest).
# A tier that cannot run (missing tool, not root, no QEMU) fails; nothing is skipped.
# Usage: scripts/test.sh [TIER...]     env: BOOTCFS_TEST_SIZE=full for the large case counts
set -uo pipefail
cd "$(dirname "$0")/.."
TIERS=("$@"); [ ${#TIERS[@]} -gt 0 ] || TIERS=(unit reference privileged vm)
if [ "$(id -u)" = 0 ]; then
  bash scripts/install-deps.sh || { echo "test.sh: installing dependencies failed" >&2; exit 1; }
else
  echo "test.sh: not root: dependencies are not installed, and the privileged and vm tiers will fail" >&2
  [ -d node_modules ] || bash scripts/npm-ci.sh
  npm run -s build || exit 1
fi
npm run -s build || exit 1
total_pass=0; total_fail=0; failed_tiers=()
for tier in "${TIERS[@]}"; do
  files=$(ls dist/test/"$tier"/*.test.js 2>/dev/null)
  if [ -z "$files" ]; then echo "test.sh: tier '$tier' has no tests" >&2; failed_tiers+=("$tier"); total_fail=$((total_fail+1)); continue; fi
  echo "================ tier: $tier ($(echo "$files" | wc -l) files)"
  log=$(mktemp)
  # one file at a time per tier keeps memory and the 2 cores predictable; vm/privileged tests are serial anyway
  node --test --test-concurrency=1 --test-reporter=spec $files 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  p=$(grep -aE '^ℹ pass [0-9]+' "$log" | tail -1 | awk '{print $3}'); f=$(grep -aE '^ℹ fail [0-9]+' "$log" | tail -1 | awk '{print $3}')
  p=${p:-0}; f=${f:-0}
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi
  total_pass=$((total_pass+p)); total_fail=$((total_fail+f))
  [ "$f" = 0 ] || failed_tiers+=("$tier")
  rm -f "$log"
done
echo "================ summary"
[ ${#failed_tiers[@]} = 0 ] || echo "failed tiers: ${failed_tiers[*]}"
echo "total: $total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
