#!/usr/bin/env bash
# The recording ring buffer's cost on this machine: a live box (`vakt run`) plays a 1080p15 clip
# (TUD-Stadtmitte scaled up) for $SECS seconds, once without and once with recording; the
# difference in CPU time is what recording costs (encode with the board profile's x264enc +
# seal + fsync at each segment end). Bytes written per hour come from the process's block-layer
# writes (/proc/PID/io write_bytes, what wears flash) and from the store's own count. Then the
# box is killed with SIGKILL in the middle of a segment and the time recovery takes at the next
# open is measured (`vakt storage` opens the store with recovery when no box runs).
# Detection is off in both runs, so the difference is recording alone.
#
#   bash benches/run-recording.sh            # SECS=60
#   bash benches/run-powercut-soak.sh        # the 1 000-iteration power-cut soak (separate)
#
# Results: benches/RESULTS.md, section "Recording".
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
SECS="${SECS:-60}"
data="${VAKT_DATA_MIRROR:-../shared/data}/video"
out="${OUT:-/tmp/vakt-recording-bench}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p vakt 2>&1 | tail -1
rm -rf "$out"; mkdir -p "$out/keys"
head -c 32 /dev/urandom > "$out/keys/vakt-footage-key"
export CREDENTIALS_DIRECTORY="$out/keys"

clip="$out/tud-1080p15.mp4"
gst-launch-1.0 -q filesrc location="$data/tud-stadtmitte/TUD-Stadtmitte.mp4" ! decodebin ! videoconvert ! \
  videoscale ! videorate ! video/x-raw,width=1920,height=1080,framerate=15/1 ! \
  x264enc speed-preset=veryfast key-int-max=30 ! mp4mux ! filesink location="$clip"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mosquitto -p "$port" >/dev/null 2>&1 &
mq=$!
trap 'kill $mq 2>/dev/null || true' EXIT
sed 's/provider = "ram"/provider = "credential"/' hardware/generic.toml > "$out/board.toml"

config() { # record
  cat > "$out/vakt-$1.toml" <<EOF
[box]
id = "bench"
site = "bench"
state_dir = "state-$1"
[source]
uri = "$clip"
loop = true
[mqtt]
url = "mqtt://127.0.0.1:$port"
insecure_plaintext = true
[storage]
record = $1
segment = "10s"
max_age = "1h"
[detect]
enabled = false
[tamper]
enabled = false
[hardware]
profile_file = "board.toml"
EOF
}

cpu_s() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
wbytes() { awk '/^write_bytes/ {print $2}' "/proc/$1/io"; }

printf '%-10s %8s %8s %14s %14s\n' recording cpu_s cpu_% disk_MB/h store_MB/h | tee "$out/summary.txt"
for rec in false true; do
  config "$rec"
  "$target/release/vakt" --log warn --config "$out/vakt-$rec.toml" run 2>"$out/run-$rec.log" &
  pid=$!
  sleep 5 # start-up, first segment
  c0=$(cpu_s $pid); w0=$(wbytes $pid); t0=$(date +%s.%N)
  sleep "$SECS"
  c1=$(cpu_s $pid); w1=$(wbytes $pid); t1=$(date +%s.%N)
  store=$(du -sb "$out/state-$rec/ring/seg" | cut -f1)
  if [ "$rec" = true ]; then
    # in the middle of a segment: SIGKILL, then recovery at the next open
    sleep 3
    kill -9 $pid; wait $pid 2>/dev/null || true
    segs=$(ls "$out/state-$rec/ring/seg" | wc -l)
    r0=$(date +%s%N)
    "$target/release/vakt" --log info --config "$out/vakt-$rec.toml" storage >"$out/storage.json" 2>"$out/recovery.log"
    r1=$(date +%s%N)
  else
    kill -TERM $pid; wait $pid 2>/dev/null || true
  fi
  awk -v c0="$c0" -v c1="$c1" -v w0="$w0" -v w1="$w1" -v t0="$t0" -v t1="$t1" -v s="$store" -v r="$rec" -v secs="$SECS" 'BEGIN {
    dt = t1 - t0; printf "%-10s %8.1f %7.1f%% %14.0f %14.0f\n", r, c1 - c0, 100 * (c1 - c0) / dt,
      (w1 - w0) / dt * 3600 / 1e6, (r == "true" ? s / (secs + 5) * 3600 / 1e6 : 0) }' | tee -a "$out/summary.txt"
done
echo "recovery after SIGKILL: $(( (r1 - r0) / 1000000 )) ms for $segs files (vakt storage, including process start)" | tee -a "$out/summary.txt"
grep -o 'recording store recovered.*' "$out/recovery.log" | tee -a "$out/summary.txt"
