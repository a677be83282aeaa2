#!/usr/bin/env bash
# End-to-end check of the aarch64 build: a short, small clip (the first 50 frames of the demo clip
# at 320x240) through `vakt analyze` natively and under qemu-aarch64-static. The two must write
# byte-identical events and identical per-frame motion masks: the same box on either architecture.
#
#   bash deploy/cross/e2e-arm64.sh [NATIVE_VAKT] [ARM64_VAKT]
# defaults: target/release/vakt and target/aarch64/aarch64-unknown-linux-gnu/release/vakt
set -euo pipefail
cd "$(dirname "$0")/../.."
native=${1:-${CARGO_TARGET_DIR:-target}/release/vakt}
arm=${2:-${CARGO_TARGET_DIR_ARM64:-target/aarch64}/aarch64-unknown-linux-gnu/release/vakt}
for b in "$native" "$arm"; do [ -x "$b" ] || { echo "e2e-arm64: $b is missing (build it first)" >&2; exit 1; }; done
bash deploy/fetch-demo-clip.sh >/dev/null
w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
gst-launch-1.0 -q filesrc location=.data/vtest.avi ! decodebin ! videoconvert ! videoscale \
  ! video/x-raw,width=320,height=240 ! identity eos-after=50 ! jpegenc quality=90 ! avimux \
  ! filesink location="$w/clip.avi"
cfg=deploy/config/example.toml
"$native" --config "$cfg" --log warn analyze --input "$w/clip.avi" --events "$w/native.jsonl" --motion-masks "$w/native-masks"
QEMU_LD_PREFIX=/ GST_REGISTRY_FORK=no qemu-aarch64-static "$arm" --config "$cfg" --log warn \
  analyze --input "$w/clip.avi" --events "$w/arm64.jsonl" --motion-masks "$w/arm64-masks"
frames=$(ls "$w/native-masks" | wc -l)
[ "$frames" -ge 49 ] || { echo "e2e-arm64: only $frames frames analysed natively" >&2; exit 1; }
[ "$(ls "$w/arm64-masks" | wc -l)" = "$frames" ] || { echo "e2e-arm64: frame counts differ" >&2; exit 1; }
[ -s "$w/native.jsonl" ] || { echo "e2e-arm64: the clip produced no events natively; the comparison would be empty" >&2; exit 1; }
if ! cmp -s "$w/native.jsonl" "$w/arm64.jsonl"; then
  echo "e2e-arm64: events differ between x86_64 and aarch64:" >&2
  diff "$w/native.jsonl" "$w/arm64.jsonl" | head -20 >&2; exit 1
fi
differ=0
for f in "$w"/native-masks/*.png; do cmp -s "$f" "$w/arm64-masks/$(basename "$f")" || differ=$((differ + 1)); done
[ "$differ" = 0 ] || { echo "e2e-arm64: $differ of $frames motion masks differ between x86_64 and aarch64" >&2; exit 1; }
echo "e2e-arm64: $frames frames, $(wc -l < "$w/native.jsonl") events: aarch64 (qemu) identical to x86_64"
