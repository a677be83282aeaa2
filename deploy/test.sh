#!/usr/bin/env bash
# The whole test suite, from a fresh Debian bookworm machine: installs what it needs, then
# formatting, lints, build and every test (unit and integration: real mosquitto, real GStreamer,
# real files). Prints the time of each stage. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

declare -a STAGES=()
stage() {
  local name=$1; shift
  local t0=$SECONDS
  echo "=== stage: $name"
  "$@"
  local dt=$((SECONDS - t0))
  STAGES+=("$(printf '%-12s %4d s' "$name" "$dt")")
  echo "=== stage: $name done in ${dt} s"
}
summary() {
  echo "=== stage times"
  for s in "${STAGES[@]}"; do echo "  $s"; done
  echo "  total        $SECONDS s"
}
trap summary EXIT

stage setup      bash deploy/setup-dev.sh
stage data       bash deploy/fetch-demo-clip.sh
stage fmt        cargo fmt --all -- --check
stage build      cargo build --workspace --all-targets --locked
stage test       cargo test --workspace --locked
stage clippy     cargo clippy --workspace --all-targets --locked -- -D warnings
