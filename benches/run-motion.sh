#!/usr/bin/env bash
# Motion benchmarks on CDnet-2014 highway, with the frozen parameters of deploy/config/example.toml:
#
#   1. builds the release binaries;
#   2. replays the JPEG sequence through the box's real pipeline (`vakt analyze`, GStreamer decode,
#      static privacy mask, scaling, our detector), writing one motion mask per frame;
#   3. motion_quality: scores those masks, our detector run in-process on the same JPEGs, and
#      OpenCV MOG2 at its defaults, side by side (precision, recall, F1 and where the errors are);
#   4. motion_cost: per-frame cost of ours and MOG2 on one core, interleaved, at several input sizes.
#
#   bash benches/run-motion.sh [--quick]
#
# --quick (for CI): scores the tuning range 470–1000 only (the held-out range 1001–1700 is not
# scored, so a quick run says nothing about it) and skips the cost benchmark.
#
# Environment: CDNET (default ../shared/data/video/cdnet-highway from the repository root),
# OUT (default /tmp/vakt-motion-bench; emptied of earlier masks on every run).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
for arg in "$@"; do
    case "$arg" in
        --quick) quick=true ;;
        -h | --help)
            awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
            exit 0
            ;;
        *)
            echo "run-motion.sh: unknown argument $arg (accepted: --quick, --help)" >&2
            exit 2
            ;;
    esac
done

cdnet=${CDNET:-../shared/data/video/cdnet-highway}
out=${OUT:-/tmp/vakt-motion-bench}
# the demo config with object detection off: this measures motion alone, on grey frames captured
# at motion.width (with detection on, motion sees the luma of the detector's frames, scaled down)
mkdir -p "$out"
config="$out/motion.toml"
sed -e "s#\.\./\.\./#$PWD/#g" -e '/^\[detect\]/,/^\[/ s/^enabled = true/enabled = false/' \
    deploy/config/example.toml >"$config"
grep -A1 '^\[detect\]' "$config" | grep -q 'enabled = false' || { echo "run-motion.sh: cannot turn detection off in $config" >&2; exit 1; }
if [[ ! -f "$cdnet/input/in000001.jpg" || ! -f "$cdnet/groundtruth/gt000001.png" ]]; then
    echo "run-motion.sh: no CDnet sequence at $cdnet (expected input/in000001.jpg and groundtruth/gt000001.png);" \
        "set CDNET, see ../shared/data/README.md" >&2
    exit 1
fi
cdnet=$(cd "$cdnet" && pwd)

run() {
    echo "+ $*" >&2
    "$@"
}

run cargo build --release --workspace --all-targets

# Masks from an earlier run must not be scored by mistake.
rm -rf "$out/masks" "$out/figures"
mkdir -p "$out"
run target/release/vakt --config "$config" analyze --input "$cdnet/input/in%06d.jpg" \
    --events "$out/events.jsonl" --motion-masks "$out/masks"

quality=(target/release/motion_quality --cdnet "$cdnet" --ours-masks "$out/masks" --config "$config"
    --json "$out/quality.json" --figures "$out/figures")
if $quick; then
    echo "QUICK RUN: frames 1-1000 only; the held-out range 1001-1700 is not scored; cost not measured." >&2
    run "${quality[@]}" --last 1000 | tee "$out/quality.md"
    exit 0
fi
run "${quality[@]}" --snapshot 560,1068,1300 | tee "$out/quality.md"
echo
run target/release/motion_cost --cdnet "$cdnet" --config "$config" --json "$out/cost.json" | tee "$out/cost.md"
echo
echo "Written: $out/quality.md, $out/cost.md, $out/quality.json, $out/cost.json, $out/figures/" >&2
