#!/usr/bin/env python3
"""Scores Vakt's rule events (line_crossed, loitering, crowding, running, presence) against truth events.

Both inputs are event JSONL as `vakt` writes it; the truth usually comes from running the same
rules over ground-truth tracks (gt_tracks.py). Interval events are matched by overlap within a
tolerance, line crossings one to one by time. Stdlib only. Formats and matching rules: README.md
beside this file.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from evalio import InputError, is_number, iter_jsonl, where, write_json  # noqa: E402

INSTANT_KINDS = ("line_crossed",)
INTERVAL_KINDS = ("loitering", "crowding", "running", "presence")
ALL_KINDS = INSTANT_KINDS + INTERVAL_KINDS
PHASES = ("start", "update", "end", "instant")
DIRECTIONS = ("left_to_right", "right_to_left")


class Interval:
    """One interval event: [onset of its start, media time of its end (or of its last message)]."""

    def __init__(self, kind, key, eid, onset, t, line):
        self.kind, self.key, self.id = kind, key, eid
        self.onset, self.end, self.line = onset, t, line
        self.ended = False

    def describe(self):
        return {"id": self.id, "key": list(self.key), "onset_s": self.onset, "end_s": self.end,
                "ended": self.ended, "line": self.line}


class Instant:
    def __init__(self, kind, key, t, line, track):
        self.kind, self.key, self.t, self.line, self.track = kind, key, t, line, track

    def describe(self):
        return {"key": list(self.key), "t_s": self.t, "track": self.track, "line": self.line}


def _field(msg, name, at, check, want):
    v = msg.get(name)
    if not check(v):
        raise InputError(f"{at}: \"{name}\" must be {want}, found {v!r}")
    return v


def _is_id(v):
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def read_events(path, kinds):
    """Reads event JSONL; returns ({kind: [Interval]}, {kind: [Instant]}, {other kind: messages})."""
    intervals = {k: [] for k in kinds if k in INTERVAL_KINDS}
    instants = {k: [] for k in kinds if k in INSTANT_KINDS}
    ignored = {}
    open_by_id = {}  # (kind, id) -> Interval still open
    last_by_id = {}  # (kind, id) -> the latest Interval with that id, open or not
    for lineno, msg in iter_jsonl(path):
        at = where(path, lineno)
        kind = _field(msg, "kind", at, lambda v: isinstance(v, str), "a string")
        if kind not in kinds:
            ignored[kind] = ignored.get(kind, 0) + 1
            continue
        phase = _field(msg, "phase", at, lambda v: v in PHASES, "one of " + ", ".join(PHASES))
        zone = _field(msg, "zone", at, lambda v: isinstance(v, str), "the zone or line name (a string)")
        t = _field(msg, "media_time_s", at, is_number, "a number (seconds)")
        attrs = msg.get("attrs", {})
        if not isinstance(attrs, dict):
            raise InputError(f"{at}: \"attrs\" must be an object, found {attrs!r}")

        if kind in INSTANT_KINDS:
            if phase != "instant":
                raise InputError(f"{at}: {kind} must have phase \"instant\", found {phase!r}")
            d = attrs.get("direction")
            if d not in DIRECTIONS:
                raise InputError(f"{at}: {kind} needs attrs.direction, one of {', '.join(DIRECTIONS)}; found {d!r}")
            instants[kind].append(Instant(kind, (zone, d), float(t), lineno, attrs.get("track")))
            continue

        if phase == "instant":
            raise InputError(f"{at}: {kind} is an interval event: phase must be start, update or end, not instant")
        eid = _field(msg, "id", at, _is_id, "the event id (a string or an integer)")
        if kind == "presence":
            cls = attrs.get("class")
            if not isinstance(cls, str):
                raise InputError(f"{at}: presence needs attrs.class (a string), found {cls!r}")
            key = (zone, cls)
        else:
            key = (zone,)
        onset = msg.get("onset_media_time_s")
        if onset is not None and not is_number(onset):
            raise InputError(f"{at}: \"onset_media_time_s\" must be a number (seconds), found {onset!r}")

        iv = open_by_id.get((kind, eid))
        if phase == "start":
            if iv is not None:
                raise InputError(f"{at}: {kind} id {eid!r} starts again; it started at line {iv.line} and has no end")
            if onset is None:
                raise InputError(f"{at}: {kind} start of id {eid!r} has no \"onset_media_time_s\"")
            iv = Interval(kind, key, eid, float(onset), float(t), lineno)
            open_by_id[(kind, eid)] = iv
            last_by_id[(kind, eid)] = iv
            intervals[kind].append(iv)
        else:
            if iv is None:
                prev = last_by_id.get((kind, eid))
                if prev is not None:
                    raise InputError(f"{at}: {kind} id {eid!r} has a {phase} after its end (start at line {prev.line})")
                # The stream (or the file) began inside the event: its first message stands for the start.
                iv = Interval(kind, key, eid, float(onset if onset is not None else t), float(t), lineno)
                open_by_id[(kind, eid)] = iv
                last_by_id[(kind, eid)] = iv
                intervals[kind].append(iv)
            if key != iv.key:
                raise InputError(f"{at}: {kind} id {eid!r} has key {key}, but started (line {iv.line}) with {iv.key}")
            iv.end = float(t)
            if phase == "end":
                iv.ended = True
                del open_by_id[(kind, eid)]
        if iv.end < iv.onset:
            raise InputError(f"{at}: {kind} id {eid!r} reaches media time {iv.end:g} s, before its onset {iv.onset:g} s")
    return intervals, instants, ignored


def _overlaps(a, b, tol):
    """Whether a and b overlap after widening both by tol seconds on each side."""
    return a.onset - tol <= b.end + tol and b.onset - tol <= a.end + tol


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def _ratio(n, d):
    return n / d if d else None


def match_intervals(truth, pred, tol):
    """A truth interval is found when a prediction with its key overlaps it (both widened by tol);
    a prediction is correct when it overlaps some truth interval likewise. Each found truth pairs
    with the overlapping prediction whose onset is closest, for the onset delay."""
    delays, missed = [], []
    for t in truth:
        cands = [p for p in pred if p.key == t.key and _overlaps(t, p, tol)]
        if cands:
            p = min(cands, key=lambda p: (abs(p.onset - t.onset), p.onset))
            delays.append(p.onset - t.onset)
        else:
            missed.append(t)
    false = [p for p in pred if not any(t.key == p.key and _overlaps(t, p, tol) for t in truth)]
    found, correct = len(truth) - len(missed), len(pred) - len(false)
    return {
        "truth": len(truth), "pred": len(pred), "truth_found": found, "pred_correct": correct,
        "recall": _ratio(found, len(truth)), "precision": _ratio(correct, len(pred)),
        "mean_onset_delay_s": _mean(delays),
        "mean_abs_onset_delay_s": _mean([abs(d) for d in delays]),
        "missed": [t.describe() for t in missed], "false": [p.describe() for p in false],
    }


def match_instants(truth, pred, tol):
    """One to one: among all (truth, prediction) pairs with the same key and |dt| <= tol, take the
    smallest |dt| first; each truth and each prediction is used at most once."""
    pairs = sorted(
        (abs(p.t - t.t), t.t, p.t, i, j)
        for i, t in enumerate(truth) for j, p in enumerate(pred)
        if t.key == p.key and abs(p.t - t.t) <= tol)
    used_t, used_p, dts = set(), set(), []
    for dt, _, _, i, j in pairs:
        if i in used_t or j in used_p:
            continue
        used_t.add(i)
        used_p.add(j)
        dts.append(pred[j].t - truth[i].t)
    n = len(dts)
    return {
        "truth": len(truth), "pred": len(pred), "truth_found": n, "pred_correct": n,
        "recall": _ratio(n, len(truth)), "precision": _ratio(n, len(pred)),
        "mean_dt_s": _mean(dts), "mean_abs_dt_s": _mean([abs(d) for d in dts]),
        "missed": [t.describe() for i, t in enumerate(truth) if i not in used_t],
        "false": [p.describe() for j, p in enumerate(pred) if j not in used_p],
    }


def evaluate(truth_path, pred_path, tol=1.0, kinds=ALL_KINDS):
    t_iv, t_in, t_ign = read_events(truth_path, kinds)
    p_iv, p_in, p_ign = read_events(pred_path, kinds)
    out = {}
    for k in kinds:
        out[k] = (match_instants(t_in[k], p_in[k], tol) if k in INSTANT_KINDS
                  else match_intervals(t_iv[k], p_iv[k], tol))
    return out, t_ign, p_ign


def _f(v, unit=""):
    return "n/a" if v is None else f"{v:.3f}{unit}"


def report(results, tol):
    lines = [f"{'kind':<13}{'truth':>6}{'pred':>6}{'found':>7}{'correct':>8}{'recall':>8}{'precision':>10}  timing"]
    notes = []
    for k, r in results.items():
        if k in INSTANT_KINDS:
            timing = f"mean |dt| {_f(r['mean_abs_dt_s'], ' s')}" if r["mean_abs_dt_s"] is not None else "-"
        elif r["mean_onset_delay_s"] is not None:
            timing = (f"onset delay mean {r['mean_onset_delay_s']:+.3f} s, "
                      f"mean |delay| {r['mean_abs_onset_delay_s']:.3f} s")
        else:
            timing = "-"
        lines.append(f"{k:<13}{r['truth']:>6}{r['pred']:>6}{r['truth_found']:>7}{r['pred_correct']:>8}"
                     f"{_f(r['recall']):>8}{_f(r['precision']):>10}  {timing}")
        if r["truth"] == 0 and r["pred"] == 0:
            notes.append(f"{k}: no events in truth or pred")
        elif r["truth"] == 0:
            notes.append(f"{k}: no truth events, recall n/a ({r['pred']} predicted, "
                          f"{r['pred'] - r['pred_correct']} of them false)")
        if r["pred"] == 0 and r["truth"]:
            notes.append(f"{k}: no predicted events, precision n/a ({r['truth']} truth events missed)")
    lines.append(f"(tolerance ±{tol:g} s; found = truth events matched, correct = predictions matched)")
    return "\n".join(lines + notes)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Match Vakt rule events (PRED) against truth events (TRUTH), both event JSONL. "
                    "Interval kinds (loitering, crowding, running, presence) match by overlap within "
                    "±tolerance, keyed by zone (presence: zone and attrs.class); line_crossed matches "
                    "one to one by time within ±tolerance, keyed by line and attrs.direction.")
    ap.add_argument("--truth", required=True, help="truth event JSONL (e.g. the rules run over gt_tracks.py output)")
    ap.add_argument("--pred", required=True, help="predicted event JSONL (the rules run over Vakt's tracks)")
    ap.add_argument("--tolerance", type=float, default=1.0, metavar="SECONDS",
                    help="time tolerance in seconds (default 1.0)")
    ap.add_argument("--kinds", default=",".join(ALL_KINDS),
                    help=f"comma-separated kinds to score (default {','.join(ALL_KINDS)})")
    ap.add_argument("--json", metavar="OUT.json", help="also write the results as JSON")
    args = ap.parse_args(argv)
    if not args.tolerance >= 0:
        ap.error(f"--tolerance must be >= 0 seconds, got {args.tolerance}")
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown or not kinds:
        ap.error(f"--kinds: unknown kind(s) {', '.join(unknown) or '(none given)'}; accepted: {', '.join(ALL_KINDS)}")
    try:
        results, t_ign, p_ign = evaluate(args.truth, args.pred, args.tolerance, kinds)
    except InputError as e:
        print(f"rule_eval: error: {e}", file=sys.stderr)
        return 2
    print(f"Rule evaluation: truth {args.truth} vs pred {args.pred}")
    print(report(results, args.tolerance))
    for label, ign in (("truth", t_ign), ("pred", p_ign)):
        if ign:
            print(f"rule_eval: note: {label}: left out " +
                  ", ".join(f"{n} {k}" for k, n in sorted(ign.items())), file=sys.stderr)
    if args.json:
        try:
            write_json(args.json, {"truth": args.truth, "pred": args.pred, "tolerance_s": args.tolerance,
                                   "kinds": results, "ignored_truth": t_ign, "ignored_pred": p_ign})
        except OSError as e:
            print(f"rule_eval: error: {args.json}: cannot write: {e.strerror}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
