#!/usr/bin/env bash
# Detector runtime comparison on one core: YOLOX-nano 416 on the first N frames of PETS09-S2L1
# (the demo clip, 768x576), through tract-onnx (the box's detector, vakt-vision) and through
# OpenCV 4.6 DNN (a standalone project in benches/runtimes/opencv-dnn that CI never builds).
#
#   bash benches/run-detector.sh [N]      (default N = 60)
#
# Both runs pin one core with taskset when it exists. Results: benches/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
n=${1:-60}
bash deploy/fetch-demo-clip.sh >/dev/null
bash models/fetch.sh .data/models >/dev/null
w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
gst-launch-1.0 -q filesrc location=.data/vtest.avi ! decodebin ! videoconvert ! video/x-raw,format=BGR \
  ! identity eos-after="$n" ! filesink location="$w/frames.bgr"
pin=(); command -v taskset >/dev/null && pin=(taskset -c 1)
cargo build --release --locked -p vakt-benches --bin detector_cost
"${pin[@]}" target/release/detector_cost --frames "$w/frames.bgr" --width 768 --height 576 --models .data/models
(cd benches/runtimes/opencv-dnn && cargo build --release --locked 2>&1 | tail -1)
"${pin[@]}" benches/runtimes/opencv-dnn/target/release/vakt-bench-opencv-dnn "$w/frames.bgr" 768 576 .data/models
