#!/usr/bin/env bash
# End-to-end check of the aarch64 build: a short, small clip (the first 50 frames of the demo clip
# at 320x240) through `vakt analyze` natively and under qemu-aarch64-static, with the demo config.
# Object detection is off by default here: loading and running the model under qemu takes more
# than 3 minutes, and CI covers it on aarch64 with the detector test (tests/detector.rs) and the
# colour capture test (tests/mask.rs). E2E_DETECT=1 turns it on (the detector then runs every
# second) and compares the tracked objects too. The two must write
# byte-identical motion and tamper events and identical per-frame motion masks, and the same
# tracked objects (ids, classes, boxes within 1 px) and analytic events: the same box on either
# architecture. (Object scores may differ in the last float bits: tract's kernels differ per CPU.)
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
cfg="$w/e2e.toml"
detect=${E2E_DETECT:-0}
if [ "$detect" = 1 ]; then
  sed "s#\.\./\.\./#$PWD/#g; s/^interval = \"200ms\"/interval = \"1s\"/" deploy/config/example.toml >"$cfg"
  grep -q '^interval = "1s"' "$cfg" || { echo "e2e-arm64: could not set detect.interval in $cfg" >&2; exit 1; }
else
  sed "s#\.\./\.\./#$PWD/#g; /^\[detect\]/,/^\[/ s/^enabled = true/enabled = false/" deploy/config/example.toml >"$cfg"
  grep -A1 '^\[detect\]' "$cfg" | grep -q 'enabled = false' || { echo "e2e-arm64: could not turn detection off in $cfg" >&2; exit 1; }
fi
"$native" --config "$cfg" --log warn analyze --input "$w/clip.avi" --events "$w/native.jsonl" --motion-masks "$w/native-masks" \
  $([ "$detect" = 1 ] && echo --tracks "$w/native-tracks.jsonl")
QEMU_LD_PREFIX=/ GST_REGISTRY_FORK=no qemu-aarch64-static "$arm" --config "$cfg" --log warn \
  analyze --input "$w/clip.avi" --events "$w/arm64.jsonl" --motion-masks "$w/arm64-masks" \
  $([ "$detect" = 1 ] && echo --tracks "$w/arm64-tracks.jsonl")
frames=$(ls "$w/native-masks" | wc -l)
[ "$frames" -ge 49 ] || { echo "e2e-arm64: only $frames frames analysed natively" >&2; exit 1; }
[ "$(ls "$w/arm64-masks" | wc -l)" = "$frames" ] || { echo "e2e-arm64: frame counts differ" >&2; exit 1; }
[ -s "$w/native.jsonl" ] || { echo "e2e-arm64: the clip produced no events natively; the comparison would be empty" >&2; exit 1; }
python3 - "$w" "$detect" <<'PY' || exit 1
import json, sys
w = sys.argv[1]
analytic = {"presence", "line_crossed", "loitering", "crowding", "running"}
def events(name):
    return [json.loads(l) for l in open(f"{w}/{name}.jsonl")]
n, a = events("native"), events("arm64")
plain = lambda evs: [json.dumps(e, sort_keys=True) for e in evs if e["kind"] not in analytic]
if plain(n) != plain(a):
    sys.exit("e2e-arm64: motion or tamper events differ between x86_64 and aarch64")
shape = lambda evs: [(e["kind"], e["phase"], e["zone"], e["attrs"].get("class"), e["attrs"].get("direction"))
                     for e in evs if e["kind"] in analytic]
if shape(n) != shape(a):
    sys.exit(f"e2e-arm64: analytic events differ:\n{shape(n)}\n{shape(a)}")
if sys.argv[2] != "1":
    sys.exit(0)
tn = [json.loads(l) for l in open(f"{w}/native-tracks.jsonl")]
ta = [json.loads(l) for l in open(f"{w}/arm64-tracks.jsonl")]
if len(tn) != len(ta):
    sys.exit("e2e-arm64: track files differ in length")
objects = 0
for fn, fa in zip(tn, ta):
    on, oa = fn["objects"], fa["objects"]
    if [(o["track"], o["class"]) for o in on] != [(o["track"], o["class"]) for o in oa]:
        sys.exit(f"e2e-arm64: frame {fn['frame']}: tracks differ: {on} / {oa}")
    for x, y in zip(on, oa):
        if max(abs(p - q) for p, q in zip(x["box"], y["box"])) > 1.0:
            sys.exit(f"e2e-arm64: frame {fn['frame']}: boxes differ by more than 1 px: {x} / {y}")
    objects += len(on)
if objects == 0:
    sys.exit("e2e-arm64: no object was tracked; the comparison would be empty")
print(f"e2e-arm64: {objects} tracked objects agree")
PY
differ=0
for f in "$w"/native-masks/*.png; do cmp -s "$f" "$w/arm64-masks/$(basename "$f")" || differ=$((differ + 1)); done
[ "$differ" = 0 ] || { echo "e2e-arm64: $differ of $frames motion masks differ between x86_64 and aarch64" >&2; exit 1; }
echo "e2e-arm64: $frames frames, $(wc -l < "$w/native.jsonl") events: aarch64 (qemu) identical to x86_64"
