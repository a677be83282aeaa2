#!/usr/bin/env bash
# The whole test suite, from a fresh Debian bookworm machine: installs what it needs, then
# formatting, lints, build and every test (unit and integration: real mosquitto, real GStreamer,
# real files); the aarch64 cross-build with its tests and an end-to-end comparison under qemu;
# both Debian packages and their checks. Prints the time of each stage. `.ci/run` calls this.
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
  STAGES+=("$(printf '%-12s %5d s' "$name" "$dt")")
  echo "=== stage: $name done in ${dt} s"
}
summary() {
  echo "=== stage times"
  for s in "${STAGES[@]}"; do echo "  $s"; done
  echo "  total        $SECONDS s"
}
trap summary EXIT

data() { bash deploy/fetch-demo-clip.sh && bash models/fetch.sh .data/models; }
# aarch64: every crate but the benches (they need OpenCV modules the cross setup leaves out)
arm64() { bash deploy/cross/cargo-arm64.sh test --release --workspace --exclude vakt-benches --locked "$@"; }
install_test=(); [ "$(id -u)" = 0 ] && install_test=(--install)

# The tests run on the release build: the binaries they test are the ones packaged below.
stage setup      bash deploy/setup-dev.sh
stage data       data
stage fmt        cargo fmt --all -- --check
stage build      cargo build --release --workspace --all-targets --locked
stage test       cargo test --release --workspace --locked
# clippy in the release profile reuses the build scripts the build stage ran (OpenCV bindings,
# ring): 74 s instead of 314 s on a fresh clone
stage clippy     cargo clippy --release --workspace --all-targets --locked -- -D warnings
# libFuzzer on the config parser and the command envelope, 30 s each (installs cargo-fuzz once)
stage fuzz       bash deploy/fuzz.sh
# the short versions of the benchmarks: analytics scored on the held-out clip, and the self-test
# of the evaluation tools (the full runs: benches/run-*.sh, results in benches/RESULTS.md)
benches() {
  bash benches/run-analytics.sh --quick && "$(bash benches/eval/setup.sh | tail -1)" benches/eval/test_eval.py
  SECS=10 OUTAGE=5 OUT=/tmp/vakt-delivery-ci bash benches/run-delivery.sh | tail -4
}
stage benches    benches
stage arm64-setup bash deploy/cross/setup-arm64.sh
# unit tests of every crate, plus the integration tests that need no second process (GStreamer
# pipelines, audit log, identity, the YOLOX detector through tract-onnx) under qemu-aarch64-static;
# only those are built, plus the `cli` integration test: building it builds the vakt binary (the
# end-to-end comparison and the package use it) in the same cargo run, with the same features. (A
# separate `cargo build -p vakt` unifies features differently and rebuilds the dependencies:
# 1295 s instead of 854 s on a fresh clone.)
arm64_tests=(--lib --bins --test mask --test log --test identity --test detector)
stage arm64-build arm64 --no-run "${arm64_tests[@]}" --test cli
stage arm64-test arm64 "${arm64_tests[@]}"
stage arm64-e2e  bash deploy/cross/e2e-arm64.sh
stage package    bash deploy/package.sh --no-build
stage pkg-check  bash deploy/check-packages.sh "${install_test[@]}"
