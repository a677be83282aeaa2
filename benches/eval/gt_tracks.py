#!/usr/bin/env python3
"""Turns MOTChallenge ground truth (rows with conf = 1) into Vakt's TRACKS.jsonl.

The output has exactly N lines, one per video frame, in the format `vakt` writes for its tracked
objects (class "person", score 1.0, track = gt id; frames without gt get an empty list). Running
Vakt's rules over these perfect tracks gives the rule truth that rule_eval.py scores against.
Stdlib only. Formats: README.md beside this file.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evalio import InputError, read_gt  # noqa: E402


def gt_to_tracks(gt, frames):
    """The TRACKS.jsonl lines (without newlines) for frames 1..frames."""
    if gt.max_frame > frames:
        raise InputError(f"{gt.path}: ground truth reaches frame {gt.max_frame}, "
                         f"beyond --frames {frames}")
    lines = []
    for k in range(1, frames + 1):
        objects = [{"track": tid, "class": "person", "score": 1.0, "box": box}
                   for tid, box in gt.by_frame.get(k, [])]
        lines.append(json.dumps({"frame": k, "objects": objects}, separators=(",", ":")))
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Convert MOTChallenge gt.txt (conf = 1 rows) into Vakt TRACKS.jsonl with exactly "
                    "N lines (gt frame k = line k = video frame k-1, 0-based).")
    ap.add_argument("--gt", required=True, help="MOTChallenge 2015 gt.txt")
    ap.add_argument("--frames", required=True, type=int, metavar="N",
                    help="number of frames in the video (lines to write); must be >= gt's last frame")
    ap.add_argument("--out", required=True, help="TRACKS.jsonl to write")
    args = ap.parse_args(argv)
    if args.frames < 1:
        ap.error(f"--frames must be at least 1, got {args.frames}")
    try:
        gt = read_gt(args.gt)
        lines = gt_to_tracks(gt, args.frames)
    except InputError as e:
        print(f"gt_tracks: error: {e}", file=sys.stderr)
        return 2
    for note in gt.notes():
        print(f"gt_tracks: note: {note}", file=sys.stderr)
    try:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    except OSError as e:
        print(f"gt_tracks: error: {args.out}: cannot write: {e.strerror}", file=sys.stderr)
        return 2
    print(f"gt_tracks: wrote {args.out}: {args.frames} frames, {gt.rows} boxes, {len(gt.ids)} ids "
          f"(gt frames with boxes: {len(gt.by_frame)}, last {gt.max_frame})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
