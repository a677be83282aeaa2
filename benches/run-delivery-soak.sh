#!/usr/bin/env bash
# The kill -9 soak of the durable outbox (issue 6): the test
# `kill_9_at_random_moments_loses_no_committed_event` (edge/vakt/tests/delivery.rs) with N kills
# instead of CI's 10. Each run of the box lasts 1.5-4 s and ends with SIGKILL; every other run
# has the broker out of reach, so the outbox holds events at the kill. At the end every seq that
# was in the outbox at any kill must have arrived at a real mosquitto subscriber, and no boot may
# have a gap in seq.
#
#   N=100 bash benches/run-delivery-soak.sh
#
# Results: benches/RESULTS.md, section "Delivery".
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
N="${N:-100}"
start=$(date +%s)
VAKT_KILL_ITERATIONS="$N" cargo test --locked -p vakt --test delivery -- --nocapture --exact \
  kill_9_at_random_moments_loses_no_committed_event 2>&1 | grep -E "kills:|test result|panicked|lost|gaps"
echo "soak: $N kills in $(( $(date +%s) - start )) s"
