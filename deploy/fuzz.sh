#!/usr/bin/env bash
# Fuzzes what the box parses from outside (issue 6): the config parser and the signed-command
# envelope, with cargo-fuzz (libFuzzer) on the nightly toolchain. Any crash is saved under
# edge/fuzz/artifacts/<target>/ and must become a regression test (a unit test with its input).
#
#   bash deploy/fuzz.sh            # SECS=30 per target (CI)
#   SECS=3600 bash deploy/fuzz.sh  # a long run
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
SECS="${SECS:-30}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
mkdir -p edge/fuzz/corpus/config edge/fuzz/corpus/envelope
# seeds: the shipped configs, and a well-formed envelope
cp deploy/config/*.toml edge/fuzz/corpus/config/ 2>/dev/null || true
printf '%s' '{"v":1,"box":"vakt-0042","cmd":"hold","args":{"from":"2026-11-23T08:00:00Z"},"issuer":"police-1","nonce":"7f3a9c0e5b2d4418","expires":"2026-11-23T08:15:00Z","sig":"00"}' \
  > edge/fuzz/corpus/envelope/seed.json
# a target that does not build fails here, not silently below
cargo +nightly fuzz build --fuzz-dir edge/fuzz 2>&1 | tail -1
for t in config envelope; do
  echo "fuzz: $t for $SECS s"
  cargo +nightly fuzz run --fuzz-dir edge/fuzz "$t" edge/fuzz/corpus/"$t" -- -max_total_time="$SECS" -rss_limit_mb=2048 2>&1 \
    | grep -E "^#[0-9]+ +DONE|ERROR|panicked|SUMMARY|Done [0-9]+ runs" || true
  if ls edge/fuzz/artifacts/"$t"/{crash,oom,timeout,leak}-* >/dev/null 2>&1; then
    echo "fuzz: $t CRASHED: see edge/fuzz/artifacts/$t/"; exit 1
  fi
done
echo "fuzz: no crash"
