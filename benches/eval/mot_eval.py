#!/usr/bin/env python3
"""Scores Vakt's tracked output (TRACKS.jsonl) against MOTChallenge ground truth with CLEAR-MOT.

The metrics come from py-motmetrics (the reference CLEAR-MOT implementation): class "person"
objects against gt rows with conf = 1, IoU distance, a match needs IoU >= --iou. Beside them the
script recomputes recall and precision with per-frame matching only (scipy's assignment, our own
IoU), as a check on how the inputs were fed to motmetrics. Needs the venv of setup.sh.
Formats and matching rules: README.md beside this file.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evalio import InputError, read_gt, read_tracks, seqinfo_frames, write_json  # noqa: E402

CLASS = "person"
MM_METRICS = [
    "num_frames", "num_objects", "num_predictions", "num_detections", "num_matches", "num_switches",
    "num_misses", "num_false_positives", "num_unique_objects", "recall", "precision", "mota", "motp",
    "idf1", "mostly_tracked", "partially_tracked", "mostly_lost", "num_fragmentations",
]


def _import_motmetrics():
    try:
        import numpy as np
        import motmetrics as mm
    except ImportError as e:
        raise InputError(f"{e.name or 'motmetrics'} is not installed: run `bash benches/eval/setup.sh` "
                         "and use .data/eval-venv/bin/python") from None
    return np, mm


def box_iou(a, b):
    """IoU of two [left, top, width, height] boxes; 0 when the union is empty."""
    ix = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    iy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(ix, 0.0) * max(iy, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def per_frame_matches(gt, frames, iou):
    """Matched boxes when every frame is matched on its own: the most pairs with IoU >= iou, ties
    broken by the least total distance (1 - IoU). motmetrics can only match as many or fewer,
    because it first keeps the previous frame's pairs that still qualify."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    max_dist = 1.0 - iou
    total = 0
    for k, objs in enumerate(frames, 1):
        g = [b for _, b in gt.by_frame.get(k, [])]
        p = [o.box for o in objs if o.cls == CLASS]
        if not g or not p:
            continue
        dist = np.array([[1.0 - box_iou(a, b) for b in p] for a in g])
        valid = dist <= max_dist
        big = min(len(g), len(p)) + 1.0  # one more valid pair always beats any saving in distance
        rows, cols = linear_sum_assignment(np.where(valid, dist, big))
        total += int(valid[rows, cols].sum())
    return total


def evaluate(gt, frames, iou=0.5, name="tracks"):
    """CLEAR-MOT over frames 1..len(frames); returns a flat dict of counts and metrics."""
    np, mm = _import_motmetrics()
    acc = mm.MOTAccumulator(auto_id=False)
    pred_boxes, other_class, tracks = 0, 0, set()
    for k, objs in enumerate(frames, 1):
        g = gt.by_frame.get(k, [])
        p = [o for o in objs if o.cls == CLASS]
        other_class += len(objs) - len(p)
        pred_boxes += len(p)
        tracks.update(o.track for o in p)
        if g and p:
            dist = mm.distances.iou_matrix(np.array([b for _, b in g], dtype=float),
                                           np.array([o.box for o in p], dtype=float), max_iou=1.0 - iou)
        else:
            dist = np.empty((len(g), len(p)))
        acc.update([i for i, _ in g], [o.track for o in p], dist, frameid=k)

    row = mm.metrics.create().compute(acc, metrics=MM_METRICS, name=name).iloc[0]
    gt_boxes = sum(len(gt.by_frame.get(k, [])) for k in range(1, len(frames) + 1))
    matched = int(row["num_detections"])  # matches + switches: every gt box paired with a prediction
    pf = per_frame_matches(gt, frames, iou)
    return {
        "name": name,
        "iou_threshold": iou,
        "motmetrics_version": getattr(mm, "__version__", "unknown"),
        "frames": len(frames),
        "gt_frames_with_boxes": sum(1 for k in gt.by_frame if k <= len(frames)),
        "gt_boxes": gt_boxes,
        "gt_ids": int(row["num_unique_objects"]),
        "pred_boxes": pred_boxes,
        "pred_tracks": len(tracks),
        "ignored_other_class": other_class,
        "matches": matched,
        "misses": int(row["num_misses"]),
        "false_positives": int(row["num_false_positives"]),
        "recall": float(row["recall"]),
        "precision": float(row["precision"]),
        "mota": float(row["mota"]),
        "motp_iou": 1.0 - float(row["motp"]),  # motmetrics' MOTP is the mean distance 1 - IoU
        "idf1": float(row["idf1"]),
        "id_switches": int(row["num_switches"]),
        "mostly_tracked": int(row["mostly_tracked"]),
        "partially_tracked": int(row["partially_tracked"]),
        "mostly_lost": int(row["mostly_lost"]),
        "fragmentations": int(row["num_fragmentations"]),
        "per_frame": {
            "matches": pf,
            "recall": pf / gt_boxes if gt_boxes else float("nan"),
            "precision": pf / pred_boxes if pred_boxes else float("nan"),
        },
    }


def fmt(v, digits=3):
    return "n/a" if v is None or v != v else f"{v:.{digits}f}"


def report(r):
    pf = r["per_frame"]
    lines = [
        f"MOT evaluation: {r['name']}  (py-motmetrics {r['motmetrics_version']} CLEAR-MOT; "
        f"class \"{CLASS}\" vs gt conf = 1; match IoU >= {r['iou_threshold']:g})",
        f"  frames            {r['frames']:>7}   ({r['video_frames_note']}; gt boxes in {r['gt_frames_with_boxes']})",
        f"  gt boxes          {r['gt_boxes']:>7}   ({r['gt_ids']} ids)",
        f"  predicted boxes   {r['pred_boxes']:>7}   ({r['pred_tracks']} tracks; "
        f"{r['ignored_other_class']} objects of other classes left out)",
        f"  matched           {r['matches']:>7}   (misses {r['misses']}, false positives {r['false_positives']})",
        f"  recall            {fmt(r['recall']):>7}",
        f"  precision         {fmt(r['precision']):>7}",
        f"  MOTA              {fmt(r['mota']):>7}",
        f"  MOTP (IoU)        {fmt(r['motp_iou']):>7}",
        f"  IDF1              {fmt(r['idf1']):>7}",
        f"  id switches       {r['id_switches']:>7}",
        f"  mostly tracked    {r['mostly_tracked']:>7}   (partially {r['partially_tracked']}, "
        f"of {r['gt_ids']} gt ids)",
        f"  mostly lost       {r['mostly_lost']:>7}",
        f"  fragmentations    {r['fragmentations']:>7}",
        f"  per-frame matching only: recall {fmt(pf['recall'])}, precision {fmt(pf['precision'])} "
        f"({pf['matches']} matched; motmetrics {r['matches']})",
    ]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="CLEAR-MOT metrics (py-motmetrics) of Vakt TRACKS.jsonl against MOTChallenge gt.txt. "
                    "Line k of the tracks is gt frame k. Only class \"person\" and gt rows with conf = 1 count.")
    ap.add_argument("--tracks", required=True, help="TRACKS.jsonl: one line per decoded frame, frame 1..N in order")
    ap.add_argument("--gt", required=True, help="MOTChallenge 2015 gt.txt (frame,id,left,top,width,height,conf,x,y,z)")
    ap.add_argument("--iou", type=float, default=0.5,
                    help="least IoU for a match (motmetrics max distance 1 - IOU); default 0.5")
    ap.add_argument("--frames", type=int, metavar="N",
                    help="frames in the video; the tracks must have exactly N lines. "
                         "Default: seqLength of the seqinfo.ini beside gt.txt, when there is one")
    ap.add_argument("--json", metavar="OUT.json", help="also write the results as JSON")
    ap.add_argument("--name", help="label for the report (default: the tracks file name)")
    args = ap.parse_args(argv)
    if not 0.0 < args.iou <= 1.0:
        ap.error(f"--iou must be in (0, 1], got {args.iou}")
    name = args.name or os.path.splitext(os.path.basename(args.tracks))[0]
    try:
        gt = read_gt(args.gt)
        frames = read_tracks(args.tracks)
        video_frames, source = args.frames, "--frames"
        if video_frames is None:
            video_frames, source = seqinfo_frames(args.gt), "seqinfo.ini"
        if video_frames is not None and len(frames) != video_frames:
            raise InputError(f"{args.tracks}: {len(frames)} lines, but the video has {video_frames} frames "
                             f"(from {source}): expected exactly one line per decoded frame")
        if len(frames) < gt.max_frame:
            raise InputError(f"{args.tracks}: {len(frames)} lines, but the ground truth {args.gt} "
                             f"reaches frame {gt.max_frame}")
        r = evaluate(gt, frames, args.iou, name)
    except InputError as e:
        print(f"mot_eval: error: {e}", file=sys.stderr)
        return 2
    for note in gt.notes():
        print(f"mot_eval: note: {note}", file=sys.stderr)
    r["tracks"], r["gt"] = args.tracks, args.gt
    r["video_frames"] = video_frames
    r["video_frames_note"] = (f"video {video_frames} from {source}" if video_frames is not None
                              else "video frame count unknown, checked against gt's last frame only")
    r["gt_notes"] = gt.notes()
    print(report(r))
    if r["per_frame"]["matches"] < r["matches"]:
        print("mot_eval: warning: per-frame matching found fewer pairs than motmetrics; "
              "the inputs were not fed consistently", file=sys.stderr)
    if args.json:
        try:
            write_json(args.json, r)
        except OSError as e:
            print(f"mot_eval: error: {args.json}: cannot write: {e.strerror}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
