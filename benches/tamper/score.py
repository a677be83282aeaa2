"""Scores tamper events against the clips' sabotage metadata.

  python score.py CLIP_DIR EVENTS_DIR
For each CLIP.avi (+ .json) it reads EVENTS_DIR/CLIP.jsonl (from `vakt analyze`) and prints a
markdown table: the expected condition, detection delay (start event's media_time_s − onset),
whether the event ended after the sabotage ended, and every other tamper event (false alarms).
"""
import glob
import json
import os
import sys

EXPECTED = {"cover": "too_dark", "blind": "too_bright", "defocus": "too_blurry", "moved": "scene_changed"}
TAMPER = {"too_dark", "too_bright", "too_blurry", "scene_changed"}


def main():
    clip_dir, ev_dir = sys.argv[1], sys.argv[2]
    rows, failures = [], 0
    for meta_path in sorted(glob.glob(os.path.join(clip_dir, "*.avi.json"))):
        meta = json.load(open(meta_path))
        clip = os.path.basename(meta_path)[: -len(".avi.json")]
        events = [json.loads(l) for l in open(os.path.join(ev_dir, clip + ".jsonl")) if l.strip()]
        tamper = [e for e in events if e["kind"] in TAMPER]
        want = EXPECTED.get(meta["sabotage"])
        hit = [e for e in tamper if e["kind"] == want]
        starts = [e for e in hit if e["phase"] == "start" and e["media_time_s"] >= meta["onset_s"]] if want else []
        # the end every open event gets at the end of the stream (L5) is not a clearing
        last_t = (meta["frames"] - 1) / meta["fps"]
        ends = [e for e in hit if e["phase"] == "end" and e["media_time_s"] < last_t - 0.25]
        others = sorted({(e["kind"], e["id"]) for e in tamper if e["kind"] != want})
        delay = f"{starts[0]['media_time_s'] - meta['onset_s']:.1f} s" if starts else ("–" if not want else "**missed**")
        if want and meta["end_s"] is not None:
            late_end = [e for e in ends if e["media_time_s"] >= meta["end_s"]]
            ended = f"yes, {late_end[0]['media_time_s'] - meta['end_s']:.1f} s after" if late_end else "**no**"
        elif want:
            ended = "(stays moved)" if not ends else "**ended while moved**"
        else:
            ended = "–"
        early = [e for e in hit if e["phase"] == "start" and e["media_time_s"] < meta["onset_s"]] if want else []
        false_alarms = len(others) + len(early)
        ok = (not want or (starts and "**" not in ended)) and false_alarms == 0
        failures += 0 if ok else 1
        rows.append(f"| {meta['source']} | {meta['sabotage']} | {want or '–'} | {delay} | {ended} | {false_alarms} | {'ok' if ok else '**FAIL**'} |")
    print("| clip | sabotage | expected | delay (start − onset) | ended after sabotage ended | other tamper events | |")
    print("|---|---|---|---:|---|---:|---|")
    print("\n".join(rows))
    print(f"\n{len(rows) - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
