"""Self-test of the evaluation tools on synthetic inputs written to a temporary folder.

    .data/eval-venv/bin/python -m unittest benches/eval/test_eval.py     (from the repo root)
    .data/eval-venv/bin/python benches/eval/test_eval.py

The mot_eval tests need motmetrics (bash benches/eval/setup.sh) and are skipped without it;
the gt_tracks and rule_eval tests need only the standard library.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import evalio  # noqa: E402
import gt_tracks  # noqa: E402
import rule_eval  # noqa: E402

HAVE_MM = importlib.util.find_spec("motmetrics") is not None
if HAVE_MM:
    import mot_eval  # noqa: E402

# Two people walking right for 6 frames, 30x60 boxes, plus conf = 0 rows that must be left out.
# Frame 6 has no gt (the video has 6 frames, gt ends at frame 5).
GT_ROWS = (
    [f"{k},1,{100 + 5 * k},50,30,60,1,-1,-1,-1" for k in range(1, 6)]
    + [f"{k},2,{300 + 5 * k},80,30,60,1,-1,-1,-1" for k in range(1, 6)]
    + [f"{k},3,500,10,20,40,0,-1,-1,-1" for k in range(1, 4)]
)
FRAMES = 6


def run(script, *args):
    return subprocess.run([sys.executable, os.path.join(HERE, script), *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)


class TempDir(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="vakt-eval-test-")
        self.addCleanup(shutil.rmtree, self.dir)

    def write(self, name, lines):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        return path

    def write_jsonl(self, name, objs):
        return self.write(name, [json.dumps(o) for o in objs])

    def gt_path(self):
        return self.write("gt.txt", GT_ROWS)

    def perfect_tracks(self):
        """gt_tracks.py's output for GT_ROWS, as a list of dicts (one per line)."""
        out = os.path.join(self.dir, "perfect.jsonl")
        p = run("gt_tracks.py", "--gt", self.gt_path(), "--frames", str(FRAMES), "--out", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(out) as f:
            return [json.loads(line) for line in f]


class GtTracksTest(TempDir):
    def test_exactly_n_lines_conf_1_only(self):
        lines = self.perfect_tracks()
        self.assertEqual([d["frame"] for d in lines], list(range(1, FRAMES + 1)))
        self.assertEqual(lines[-1]["objects"], [])  # no gt in frame 6
        self.assertEqual(lines[0]["objects"][0],
                         {"track": 1, "class": "person", "score": 1.0, "box": [105.0, 50.0, 30.0, 60.0]})
        self.assertEqual({o["track"] for d in lines for o in d["objects"]}, {1, 2})  # id 3 has conf 0

    def test_gt_beyond_frames_fails(self):
        p = run("gt_tracks.py", "--gt", self.gt_path(), "--frames", "4", "--out", os.path.join(self.dir, "x"))
        self.assertEqual(p.returncode, 2)
        self.assertIn("frame 5", p.stderr)

    def test_no_conf_1_rows_fails(self):
        gt = self.write("gt0.txt", ["1,1,10,10,5,5,0,-1,-1,-1", "2,1,10,10,5,5,-1,-1,-1,-1"])
        with self.assertRaisesRegex(evalio.InputError, r"no rows with conf = 1 \(conf values found: -1 \(1 rows\), 0"):
            evalio.read_gt(gt)

    def test_malformed_gt_names_line(self):
        gt = self.write("bad.txt", GT_ROWS[:2] + ["3,1,abc,50,30,60,1,-1,-1,-1"])
        with self.assertRaisesRegex(evalio.InputError, r"bad\.txt:3: left is 'abc'"):
            evalio.read_gt(gt)


@unittest.skipUnless(HAVE_MM, "motmetrics not installed: run bash benches/eval/setup.sh and use its python")
class MotEvalTest(TempDir):
    def evaluate(self, tracks, iou=0.5):
        path = self.write_jsonl("tracks.jsonl", tracks)
        return mot_eval.evaluate(evalio.read_gt(self.gt_path()), evalio.read_tracks(path), iou)

    def test_perfect_tracks(self):
        r = self.evaluate(self.perfect_tracks())
        self.assertEqual((r["gt_boxes"], r["pred_boxes"], r["matches"]), (10, 10, 10))
        self.assertEqual((r["recall"], r["precision"], r["mota"], r["id_switches"]), (1.0, 1.0, 1.0, 0))
        self.assertAlmostEqual(r["motp_iou"], 1.0)
        self.assertEqual((r["mostly_tracked"], r["mostly_lost"], r["fragmentations"]), (2, 0, 0))
        self.assertEqual(r["per_frame"]["matches"], 10)

    def test_new_id_mid_track_is_one_switch(self):
        tracks = self.perfect_tracks()
        for d in tracks[2:]:
            for o in d["objects"]:
                if o["track"] == 1:
                    o["track"] = 7
        r = self.evaluate(tracks)
        self.assertEqual(r["id_switches"], 1)
        self.assertEqual((r["recall"], r["precision"]), (1.0, 1.0))
        self.assertAlmostEqual(r["mota"], 0.9)  # 1 - 1 switch / 10 gt boxes

    def test_exchanged_ids_are_two_switches(self):
        tracks = self.perfect_tracks()
        for d in tracks[2:]:
            for o in d["objects"]:
                o["track"] = 3 - o["track"]
        self.assertEqual(self.evaluate(tracks)["id_switches"], 2)

    def test_iou_threshold(self):
        # 30 px wide box moved right by 10 px: IoU 20/40 = 0.5 exactly, still a match.
        tracks = self.perfect_tracks()
        tracks[1]["objects"][0]["box"][0] += 10
        r = self.evaluate(tracks)
        self.assertEqual((r["matches"], r["misses"], r["false_positives"]), (10, 0, 0))
        # by 11 px: IoU 19/41 < 0.5, a miss and a false positive.
        tracks[1]["objects"][0]["box"][0] += 1
        r = self.evaluate(tracks)
        self.assertEqual((r["matches"], r["misses"], r["false_positives"]), (9, 1, 1))
        self.assertAlmostEqual(r["recall"], 0.9)
        self.assertAlmostEqual(r["precision"], 0.9)
        self.assertAlmostEqual(r["mota"], 0.8)
        self.assertEqual(r["per_frame"]["matches"], 9)

    def test_only_person_counts(self):
        tracks = self.perfect_tracks()
        tracks[0]["objects"].append({"track": 50, "class": "car", "score": 0.9, "box": [0, 0, 10, 10]})
        for o in tracks[3]["objects"]:
            o["class"] = "car"
        r = self.evaluate(tracks)
        self.assertEqual((r["pred_boxes"], r["ignored_other_class"], r["false_positives"]), (8, 3, 0))
        self.assertEqual(r["misses"], 2)

    def test_predictions_in_frames_without_gt_are_false_positives(self):
        tracks = self.perfect_tracks()
        tracks[5]["objects"] = [{"track": 1, "class": "person", "score": 0.8, "box": [135, 50, 30, 60]}]
        r = self.evaluate(tracks)
        self.assertEqual((r["false_positives"], r["frames"]), (1, 6))
        self.assertAlmostEqual(r["precision"], 10 / 11)
        self.assertAlmostEqual(r["per_frame"]["precision"], 10 / 11)

    def test_cli_json_and_frame_counts(self):
        tracks = self.write_jsonl("t.jsonl", self.perfect_tracks())
        gt, out = self.gt_path(), os.path.join(self.dir, "out.json")
        p = run("mot_eval.py", "--tracks", tracks, "--gt", gt, "--frames", "6", "--json", out, "--name", "x")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("MOTA", p.stdout)
        self.assertIn("3 rows with conf = 0 left out", p.stderr)
        with open(out) as f:
            r = json.load(f)
        self.assertEqual((r["name"], r["recall"], r["precision"], r["video_frames"]), ("x", 1.0, 1.0, 6))
        # a video of 7 frames needs 7 lines
        p = run("mot_eval.py", "--tracks", tracks, "--gt", gt, "--frames", "7")
        self.assertEqual(p.returncode, 2)
        self.assertIn("6 lines, but the video has 7 frames", p.stderr)
        # fewer lines than gt's last frame (5)
        short = self.write_jsonl("short.jsonl", self.perfect_tracks()[:4])
        p = run("mot_eval.py", "--tracks", short, "--gt", gt)
        self.assertEqual(p.returncode, 2)
        self.assertIn("4 lines, but the ground truth", p.stderr)

    def test_malformed_tracks_name_the_line(self):
        gt = self.gt_path()
        good = [json.dumps(d) for d in self.perfect_tracks()]
        cases = [
            (good[:2] + ['{"frame": 3, "objects": [}'] + good[3:], r":3: not valid JSON"),
            (good[:1] + good[2:], r":2: \"frame\" is 3, expected 2"),
            (good[:3] + ['{"frame": 4, "objects": [{"track": 1, "class": "person", "score": 1, "box": [1, 2, 3]}]}']
             + good[4:], r":4: objects\[0\]: \"box\" must be"),
            (good[:4] + ["", *good[4:]], r":5: empty line"),
        ]
        for lines, pattern in cases:
            path = self.write("bad.jsonl", lines)
            p = run("mot_eval.py", "--tracks", path, "--gt", gt, "--frames", "6")
            self.assertEqual(p.returncode, 2, pattern)
            self.assertRegex(p.stderr, "bad\\.jsonl" + pattern)
            self.assertNotIn("Traceback", p.stderr)


def interval(kind, eid, zone, onset, end, cls=None, updates=()):
    attrs = {"class": cls} if cls else {}
    msgs = [{"kind": kind, "phase": "start", "id": eid, "zone": zone, "media_time_s": onset + 0.5,
             "onset_media_time_s": onset, "attrs": attrs}]
    msgs += [{"kind": kind, "phase": "update", "id": eid, "zone": zone, "media_time_s": t,
              "onset_media_time_s": onset, "attrs": attrs} for t in updates]
    if end is not None:
        msgs.append({"kind": kind, "phase": "end", "id": eid, "zone": zone, "media_time_s": end,
                     "onset_media_time_s": onset, "attrs": attrs})
    return msgs


def crossing(line, direction, t, track=1):
    return {"kind": "line_crossed", "phase": "instant", "id": f"x{t}", "zone": line, "media_time_s": t,
            "onset_media_time_s": t, "attrs": {"direction": direction, "track": track, "class": "person"}}


class RuleEvalTest(TempDir):
    def evaluate(self, truth, pred, tol=1.0, kinds=rule_eval.ALL_KINDS):
        t = self.write_jsonl("truth.jsonl", truth)
        p = self.write_jsonl("pred.jsonl", pred)
        return rule_eval.evaluate(t, p, tol, kinds)[0]

    def test_interval_overlap_and_onset_delay(self):
        truth = interval("loitering", "a", "door", 10.0, 20.0) + interval("loitering", "b", "door", 40.0, 45.0)
        pred = interval("loitering", 1, "door", 10.5, 19.0) + interval("loitering", 2, "yard", 40.0, 45.0)
        r = self.evaluate(truth, pred)["loitering"]
        self.assertEqual((r["truth"], r["pred"], r["truth_found"], r["pred_correct"]), (2, 2, 1, 1))
        self.assertEqual((r["recall"], r["precision"]), (0.5, 0.5))
        self.assertAlmostEqual(r["mean_onset_delay_s"], 0.5)
        self.assertAlmostEqual(r["mean_abs_onset_delay_s"], 0.5)
        self.assertEqual(r["missed"][0]["id"], "b")  # zone differs: wrong key

    def test_interval_tolerance(self):
        # truth [10, 12], prediction [13.5, 15]: a 1.5 s gap, bridged by widening both by 1 s.
        truth = interval("crowding", "a", "hall", 10.0, 12.0)
        pred = interval("crowding", "p", "hall", 13.5, 15.0)
        self.assertEqual(self.evaluate(truth, pred, tol=1.0)["crowding"]["recall"], 1.0)
        self.assertAlmostEqual(self.evaluate(truth, pred, tol=1.0)["crowding"]["mean_onset_delay_s"], 3.5)
        r = self.evaluate(truth, pred, tol=0.5)["crowding"]
        self.assertEqual((r["recall"], r["precision"]), (0.0, 0.0))

    def test_interval_without_end_runs_to_last_message(self):
        truth = interval("running", "a", "track", 30.0, 31.0)
        pred = interval("running", "p", "track", 20.0, None, updates=[25.0, 28.5])
        self.assertEqual(self.evaluate(truth, pred, tol=1.0)["running"]["recall"], 1.0)  # 28.5 + 2 >= 30
        self.assertEqual(self.evaluate(truth, pred, tol=0.5)["running"]["recall"], 0.0)

    def test_presence_keyed_by_class(self):
        truth = interval("presence", "a", "gate", 1.0, 5.0, cls="person")
        pred = interval("presence", "p", "gate", 1.0, 5.0, cls="car") + interval("presence", "q", "gate", 1.2, 5.0, cls="person")
        r = self.evaluate(truth, pred)["presence"]
        self.assertEqual((r["recall"], r["precision"]), (1.0, 0.5))
        self.assertEqual(r["false"][0]["key"], ["gate", "car"])
        self.assertAlmostEqual(r["mean_onset_delay_s"], 0.2)

    def test_line_crossings_one_to_one_by_direction(self):
        truth = [crossing("L", "left_to_right", 5.0), crossing("L", "left_to_right", 6.0),
                 crossing("M", "left_to_right", 9.0)]
        pred = [crossing("L", "left_to_right", 5.3), crossing("L", "left_to_right", 5.9),
                crossing("L", "right_to_left", 6.0), crossing("M", "left_to_right", 10.5)]
        r = self.evaluate(truth, pred)["line_crossed"]
        self.assertEqual((r["truth_found"], r["pred_correct"]), (2, 2))  # 5.0-5.3 and 6.0-5.9
        self.assertAlmostEqual(r["recall"], 2 / 3)
        self.assertAlmostEqual(r["precision"], 2 / 4)
        self.assertAlmostEqual(r["mean_abs_dt_s"], 0.2)
        self.assertEqual(self.evaluate(truth, pred, tol=1.5)["line_crossed"]["truth_found"], 3)

    def test_line_crossings_each_used_once(self):
        truth = [crossing("L", "left_to_right", 5.0), crossing("L", "left_to_right", 5.2)]
        pred = [crossing("L", "left_to_right", 5.1)]
        r = self.evaluate(truth, pred)["line_crossed"]
        self.assertEqual((r["truth_found"], r["recall"], r["precision"]), (1, 0.5, 1.0))
        # greedy by smallest |dt|: 5.2 pairs with 5.15, leaving 5.0 for 4.2 (0.8 s)
        pred = [crossing("L", "left_to_right", 5.15), crossing("L", "left_to_right", 4.2)]
        r = self.evaluate(truth, pred)["line_crossed"]
        self.assertEqual((r["truth_found"], r["pred_correct"]), (2, 2))
        self.assertAlmostEqual(r["mean_abs_dt_s"], (0.05 + 0.8) / 2)

    def test_zero_truth_and_other_kinds(self):
        motion = {"kind": "motion", "phase": "start", "id": "m", "zone": "all", "media_time_s": 1.0,
                  "onset_media_time_s": 1.0, "attrs": {}}
        truth = [motion]
        pred = [motion] + interval("loitering", 1, "door", 1.0, 3.0)
        r = self.evaluate(truth, pred)
        self.assertIsNone(r["loitering"]["recall"])
        self.assertEqual((r["loitering"]["pred"], r["loitering"]["precision"]), (1, 0.0))
        t = self.write_jsonl("t.jsonl", truth)
        p = self.write_jsonl("p.jsonl", pred)
        proc = run("rule_eval.py", "--truth", t, "--pred", p, "--kinds", "loitering,line_crossed",
                   "--json", os.path.join(self.dir, "r.json"))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertRegex(proc.stdout, r"loitering\s+0\s+1\s+0\s+0\s+n/a\s+0\.000")
        self.assertIn("loitering: no truth events, recall n/a (1 predicted, 1 of them false)", proc.stdout)
        self.assertIn("left out 1 motion", proc.stderr)
        with open(os.path.join(self.dir, "r.json")) as f:
            j = json.load(f)
        self.assertEqual(sorted(j["kinds"]), ["line_crossed", "loitering"])
        self.assertIsNone(j["kinds"]["loitering"]["recall"])

    def test_malformed_events_name_the_line(self):
        good = interval("loitering", "a", "door", 1.0, 2.0)
        no_dir = crossing("L", "left_to_right", 3.0)
        del no_dir["attrs"]["direction"]
        no_onset = dict(good[0])
        del no_onset["onset_media_time_s"]
        cases = [
            ([json.dumps(m) for m in good] + ["{not json"], r":3: not valid JSON"),
            ([json.dumps(m) for m in good + [no_dir]], r":3: line_crossed needs attrs.direction"),
            ([json.dumps(no_onset)], r":1: loitering start of id 'a' has no \"onset_media_time_s\""),
            (["[1, 2]"], r":1: expected a JSON object"),
        ]
        ok = self.write_jsonl("ok.jsonl", good)
        for lines, pattern in cases:
            bad = self.write("bad.jsonl", lines)
            p = run("rule_eval.py", "--truth", ok, "--pred", bad)
            self.assertEqual(p.returncode, 2, pattern)
            self.assertRegex(p.stderr, "bad\\.jsonl" + pattern)
            self.assertNotIn("Traceback", p.stderr)

    def test_bad_kinds_option(self):
        ok = self.write_jsonl("ok.jsonl", [])
        p = run("rule_eval.py", "--truth", ok, "--pred", ok, "--kinds", "loitering,flying")
        self.assertEqual(p.returncode, 2)
        self.assertIn("unknown kind(s) flying", p.stderr)


if __name__ == "__main__":
    unittest.main()
