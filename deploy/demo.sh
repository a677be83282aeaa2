#!/usr/bin/env bash
# The embedded default: sets up a fresh Debian bookworm machine, builds Vakt and runs the box on
# the demo clip (PETS2009, looped) with an embedded MQTT broker on 127.0.0.1:1884. Every event is
# printed as it is published; in another terminal:
#   mosquitto_sub -h 127.0.0.1 -p 1884 -t 'vakt/#' -v
# Stop with Ctrl-C (once: orderly shutdown; twice: at once).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
bash deploy/setup-dev.sh
bash deploy/fetch-demo-clip.sh
bash models/fetch.sh .data/models --only yolox_nano
cargo build --release --locked -p vakt
exec "${CARGO_TARGET_DIR:-target}/release/vakt" --config deploy/config/example.toml run --print-events "$@"
