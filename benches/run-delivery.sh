#!/usr/bin/env bash
# Delivery figures on this machine (issue 6):
#   1. the durable outbox's commit throughput with fsync (`vakt bench-outbox`: 600-byte events,
#      one transaction per batch of 1, 10 and 100) and its drain throughput;
#   2. latency from an event's `at` to its arrival at a subscriber of a real mosquitto, p50/p99,
#      normally and during the catch-up after an outage: a live box (a moving ball seen by 24
#      zones, about 24 events a second) runs $SECS s, then a relay between box and broker is cut
#      for $OUTAGE s and restored, then $SECS s more. Box and subscriber share this clock.
#
#   bash benches/run-delivery.sh                 # SECS=60 OUTAGE=30
#   bash benches/run-delivery-soak.sh            # the kill -9 soak (separate)
#
# Results: benches/RESULTS.md, section "Delivery".
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
SECS="${SECS:-60}"; OUTAGE="${OUTAGE:-30}"
out="${OUT:-/tmp/vakt-delivery-bench}"
target="${CARGO_TARGET_DIR:-target}"
# the selection of the suite's build stage: `-p vakt` alone unifies features differently and
# rebuilds the dependencies (about 6 min on a fresh clone in CI)
cargo build --release --locked --workspace --all-targets 2>&1 | tail -1
bin="$target/release/vakt"
rm -rf "$out"; mkdir -p "$out"

echo "== outbox commit and drain throughput ($out/ob, $(df -T "$out" | awk 'NR==2{print $2}'))"
for b in 1 10 100; do "$bin" bench-outbox --dir "$out/ob" --count 5000 --batch "$b"; done | tee "$out/outbox.jsonl"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
broker=$(free_port); relay=$(free_port)
mosquitto -p "$broker" >/dev/null 2>&1 &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
# A relay that SIGUSR1 cuts (connections reset, new ones refused) and SIGUSR2 restores.
python3 - "$relay" "$broker" > "$out/relay.log" 2>&1 <<'PY' &
import asyncio, signal, sys
listen, to = int(sys.argv[1]), int(sys.argv[2])
up = True; conns = set()
async def pipe(r, w):
    try:
        while data := await r.read(65536):
            w.write(data); await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def handle(cr, cw):
    if not up:
        cw.close(); return
    sr, sw = await asyncio.open_connection("127.0.0.1", to)
    conns.add(cw); conns.add(sw)
    await asyncio.gather(pipe(cr, sw), pipe(sr, cw))
    conns.discard(cw); conns.discard(sw)
def cut():
    global up
    up = False
    for w in list(conns):
        w.transport.abort()
def restore():
    global up
    up = True
async def main():
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, cut)
    loop.add_signal_handler(signal.SIGUSR2, restore)
    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()
asyncio.run(main())
PY
relay_pid=$!; pids+=("$relay_pid")
sleep 0.5

zones=""
for i in $(seq 0 23); do
  zones+="[[zones]]
name = \"z$i\"
points = [[0.02, 0.02], [0.98, 0.02], [0.98, 0.98], [0.02, 0.98]]
"
done
cat > "$out/vakt.toml" <<EOF
[box]
id = "bench"
site = "bench"
state_dir = "$out/state"
[source]
uri = "test://ball?width=160&height=120&fps=15"
[mqtt]
url = "mqtt://127.0.0.1:$relay"
insecure_plaintext = true
health_interval = "1s"
keep_alive = "5s"
[storage]
record = false
[detect]
enabled = false
[events]
start_after = "200ms"
update_interval = "1s"
end_after = "1s"
$zones
EOF

mosquitto_sub -h 127.0.0.1 -p "$broker" -q 1 -t 'vakt/+/+/events' -F '%U %p' > "$out/recv.txt" &
pids+=($!)
sleep 0.5
"$bin" --config "$out/vakt.toml" run 2> "$out/box.log" &
box=$!; pids+=("$box")
sleep "$SECS"
cut=$(date +%s.%N); kill -USR1 "$relay_pid"
sleep "$OUTAGE"
restore=$(date +%s.%N); kill -USR2 "$relay_pid"
sleep "$SECS"
kill -TERM "$box"; wait "$box" || true
sleep 1

python3 - "$out/recv.txt" "$cut" "$restore" <<'PY'
import json, sys, datetime
path, cut, restore = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
first = {}; copies = 0
for line in open(path):
    t, _, p = line.partition(" ")
    e = json.loads(p)
    at = datetime.datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp()
    copies += 1
    if e["seq"] not in first:
        first[e["seq"]] = (float(t), at)
def pct(xs, q):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")
held = [(r, a) for r, a in first.values() if cut <= a < restore]
drained = max(r for r, a in held) if held else restore
normal = [r - a for r, a in first.values() if a < cut - 1 or a > drained + 1]
catchup = [r - a for r, a in first.values() if restore <= a <= drained]
seqs = sorted(first); gaps = [s for s in range(seqs[0], seqs[-1] + 1) if s not in first]
print(f"events {len(first)} (copies {copies}), gaps {len(gaps)}")
print(f"normal: n={len(normal)} p50={pct(normal,.5)*1000:.1f} ms p99={pct(normal,.99)*1000:.1f} ms")
print(f"held by the {restore-cut:.0f} s outage: n={len(held)}, all sent {drained-restore:.2f} s after the restore")
print(f"emitted during the catch-up: n={len(catchup)} p50={pct(catchup,.5)*1000:.1f} ms p99={pct(catchup,.99)*1000:.1f} ms")
PY
