#!/usr/bin/env bash
# The power-cut soak: the store's workload (record, sweep, hold) cut at N random instants on the
# simulated disk (edge/store/src/io.rs, SimDisk: only what was fsynced survives), each followed by
# recovery and the checks of F3 and F4 (edge/store/tests/store.rs). CI runs 10; this runs N.
#
#   N=1000 bash benches/run-powercut-soak.sh
#
# Results: benches/RESULTS.md, section "Recording".
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
N="${N:-1000}"
start=$(date +%s)
VAKT_POWER_CUTS="$N" cargo test --release --locked -p vakt-store --test store \
  power_cuts_at_random_instants_keep_the_index_and_files_in_step 2>&1 | grep -E "test result|panicked|seed"
echo "$N power cuts, recovered and checked, in $(( $(date +%s) - start )) s"
