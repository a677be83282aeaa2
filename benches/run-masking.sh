#!/usr/bin/env bash
# Masking against ground truth: `vakt redact --masks` on PETS09-S2L1 (the clip the [redact]
# values were tuned on) and TUD-Stadtmitte (held out), with the shipped [redact] values (the
# evaluation configs set none, so the defaults apply; they equal deploy/config/vakt.toml), scored
# by mask_eval: coverage (ground-truth person boxes at least 90 % masked), over-masking (masked
# share of the pixels outside every person box), and frames where a person is under 90 % / 50 %
# masked. The same with the face detector off (`[redact] faces = false`), to show what it adds.
# Then the fail-closed runs: the detector's results 300 ms late (inside max_staleness),
# 800 ms late (outside it) and stopped half-way; and the cost of the masking stage per frame.
#
#   bash benches/run-masking.sh
#
# Data: ../shared/data (or $VAKT_DATA_MIRROR). Results: benches/RESULTS.md, section "Masking".
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
data="${VAKT_DATA_MIRROR:-../shared/data}/video"
out="${OUT:-/tmp/vakt-masking-bench}"
target="${CARGO_TARGET_DIR:-target}"
bash models/fetch.sh .data/models --only yolox_nano,ultraface >/dev/null
cargo build --release --locked --workspace --all-targets 2>&1 | tail -1
rm -rf "$out"; mkdir -p "$out"

# name clip gt config stop-at (half the clip)
clips=("pets09|$data/pets09-s2l1/vtest.avi|$data/pets09-s2l1/gt.txt|benches/eval/pets09.toml|40"
       "tud-stadtmitte|$data/tud-stadtmitte/TUD-Stadtmitte.mp4|$data/tud-stadtmitte/gt.txt|benches/eval/tud-stadtmitte.toml|3.6")
printf '%-16s %-14s %9s %9s %7s %7s %12s\n' clip run coverage over u90 u50 masked-whole | tee "$out/summary.txt"
for c in "${clips[@]}"; do
  IFS='|' read -r name clip gt cfg stop <<<"$c"
  # the same config with the face detector off, beside it (its paths are relative to it)
  nofaces="$(dirname "$cfg")/.$name-nofaces.toml"
  trap 'rm -f benches/eval/.*-nofaces.toml' EXIT
  { cat "$cfg"; printf '\n[redact]\nfaces = false\n'; } > "$nofaces"
  for run in "shipped|" "faces-off||nofaces" "late300|--detector-delay 300" "late800|--detector-delay 800" \
             "stop|--detector-stop-at $stop"; do
    IFS='|' read -r rname flags variant <<<"$run"
    runcfg=$cfg
    [ "${variant:-}" = nofaces ] && runcfg=$nofaces
    # shellcheck disable=SC2086
    log=$("$target/release/vakt" --log warn --config "$runcfg" redact --input "$clip" \
      --output "$out/$name-$rname.mp4" --masks "$out/$name-$rname-masks" $flags 2>&1)
    echo "$log" > "$out/$name-$rname.log"
    whole=$(echo "$log" | sed -n 's/.*: \([0-9]*\) masked whole,.*/\1/p')
    "$target/release/mask_eval" --gt "$gt" --masks "$out/$name-$rname-masks" > "$out/$name-$rname.json"
    python3 - "$out/$name-$rname.json" "$name" "$rname" "$whole" <<'PY' | tee -a "$out/summary.txt"
import json, sys
d = json.load(open(sys.argv[1]))
print('%-16s %-14s %9.4f %9.4f %7d %7d %12s' % (sys.argv[2], sys.argv[3], d['coverage'], d['over_masking'],
      d['frames_with_a_person_under_90pct_masked'], d['frames_with_a_person_under_50pct_masked'], sys.argv[4]))
PY
    rm -rf "$out/$name-$rname-masks"
  done
done
echo "== face detector cost per run, one core (60 frames of TUD-Stadtmitte, 640x480)"
gst-launch-1.0 -q filesrc location="$data/tud-stadtmitte/TUD-Stadtmitte.mp4" ! decodebin ! videoconvert \
  ! video/x-raw,format=BGR ! identity eos-after=60 ! filesink location="$out/tud.bgr"
for size in small large; do
  taskset -c 0 "$target/release/detector_cost" --frames "$out/tud.bgr" --width 640 --height 480 \
    --models .data/models --faces $size | tee -a "$out/cost.json"
done
rm -f "$out/tud.bgr"
echo "== masking cost per frame, one core"
taskset -c 0 "$target/release/mask_cost" | tee -a "$out/cost.json"
echo "results in $out"
