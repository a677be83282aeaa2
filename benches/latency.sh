#!/usr/bin/env bash
# Event latency and replay throughput.
#
# Latency: a real mosquitto on a free loopback port, the release `vakt run` on a live test pattern
# (a moving ball, so motion never stops; events.update_interval = 1s gives one event a second), and
# a mosquitto_sub that stamps each message on receipt. Latency = receipt time − the event's `at`
# (the wall time at which analysis finished the frame that emitted it), so it covers analysis
# hand-off, event building, the MQTT link and the broker. Decode, mask and scaling happen before
# `at`; their cost per frame is in the replay throughput below.
#
# Throughput: `vakt analyze` over vtest.avi (795 frames, 768×576), wall time of the whole run.
#
#   bash benches/latency.sh [SECONDS]      (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
bash deploy/fetch-demo-clip.sh >/dev/null
cargo build --release --locked -p vakt 2>&1 | tail -1
tmp=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" > "$tmp/mq.conf"
mosquitto -c "$tmp/mq.conf" >/dev/null 2>&1 &
sleep 0.5
cat > "$tmp/vakt.toml" <<CFG
[box]
id = "bench"
site = "bench"
state_dir = "state"
[source]
uri = "test://ball?width=640&height=360&fps=15"
[mqtt]
url = "mqtt://127.0.0.1:$port"
insecure_plaintext = true
[storage]
record = false
[detect]
enabled = false   # motion events: the latency of the event path, not of the detector
[events]
update_interval = "1s"
CFG
mosquitto_sub -p "$port" -t 'vakt/+/+/events' -F '%U %p' > "$tmp/rx.txt" &
sleep 0.5
target/release/vakt --config "$tmp/vakt.toml" --log warn run &
box=$!
sleep "$secs"
kill -TERM $box; wait $box || true
echo "## Event latency, box → broker → subscriber ($secs s, test://ball 640×360@15, update_interval 1s)"
python3 - "$tmp/rx.txt" <<'PY'
import json, sys, datetime, statistics
lat = []
for line in open(sys.argv[1]):
    ts, payload = line.split(' ', 1)
    rx = float(ts)
    at = datetime.datetime.strptime(json.loads(payload)["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()
    lat.append((rx - at) * 1000)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))]
print(f"events: {len(lat)}; latency ms: p50 {q(50):.2f}, p99 {q(99):.2f}, max {lat[-1]:.2f}")
PY
echo
echo "## Replay throughput: vakt analyze on vtest.avi (795 frames, 768×576), object detection off"
# (with detection: benches/run-analytics.sh, "cost per frame")
sed -e "s#\.\./\.\./#$PWD/#g" -e '/^\[detect\]/,/^\[/ s/^enabled = true/enabled = false/' \
    deploy/config/example.toml >"$tmp/replay.toml"
for i in 1 2 3; do
  s=$(date +%s.%N)
  target/release/vakt --config "$tmp/replay.toml" analyze --input .data/vtest.avi --events "$tmp/e.jsonl" 2>/dev/null
  e=$(date +%s.%N)
  python3 -c "d=$e-$s; print(f'run $i: {d:.2f} s, {795/d:.0f} frames/s')"
done
