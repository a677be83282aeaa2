"""Readers for the evaluation inputs: MOTChallenge 2015 gt.txt, Vakt's TRACKS.jsonl and event JSONL.

Stdlib only, so that gt_tracks.py and rule_eval.py run on any python3. Every reader raises
InputError naming the file and the line, which the scripts print as one line before exiting 2.
Formats and matching rules: README.md beside this file.
"""
import configparser
import json
import math
import os
from collections import Counter

# Repository root (benches/eval/../..) and the default data folder, ../shared/data beside it.
REPO_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_DATA = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))


class InputError(Exception):
    """An input file breaks its format; the message names the file and, where there is one, the line."""


def where(path, lineno=None):
    return f"{path}:{lineno}" if lineno is not None else str(path)


def _number(text, what, path, lineno):
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{where(path, lineno)}: {what} is {text.strip()!r}, not a number") from None
    if not math.isfinite(v):
        raise InputError(f"{where(path, lineno)}: {what} is {text.strip()!r}, not a finite number")
    return v


def _integer(text, what, path, lineno):
    v = _number(text, what, path, lineno)
    if v != int(v):
        raise InputError(f"{where(path, lineno)}: {what} is {text.strip()!r}, not an integer")
    return int(v)


class GroundTruth:
    """The rows of one gt.txt with conf = 1, by frame (1-based), plus what was left out."""

    def __init__(self, path):
        self.path = path
        self.by_frame = {}  # frame -> list of (id, [left, top, width, height]), sorted by id
        self.conf_counts = Counter()  # conf value as written (normalised number) -> rows

    @property
    def rows(self):
        return sum(len(v) for v in self.by_frame.values())

    @property
    def ids(self):
        return {i for v in self.by_frame.values() for i, _ in v}

    @property
    def max_frame(self):
        return max(self.by_frame) if self.by_frame else 0

    def ignored(self):
        """(conf value, rows) for every conf value other than 1, for the notes a script prints."""
        return sorted((c, n) for c, n in self.conf_counts.items() if c != 1)

    def notes(self):
        notes = []
        for c, n in self.ignored():
            kind = "" if c == 0 else " (unexpected conf value)"
            notes.append(f"{self.path}: {n} rows with conf = {c:g} left out{kind}")
        return notes


def read_gt(path):
    """Reads a MOTChallenge 2015 gt.txt (`frame,id,left,top,width,height,conf,x,y,z`), keeping conf = 1.

    Raises InputError for a malformed row, a frame < 1, a negative size, an id twice in one frame,
    or a file with no conf = 1 row at all.
    """
    gt = GroundTruth(path)
    seen = set()
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read ground truth: {e.strerror}") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.strip().split(",")
            if len(fields) < 7:
                raise InputError(
                    f"{where(path, lineno)}: {len(fields)} fields, expected at least 7 "
                    "(frame,id,left,top,width,height,conf[,x,y,z])")
            frame = _integer(fields[0], "frame", path, lineno)
            tid = _integer(fields[1], "id", path, lineno)
            box = [_number(fields[k], name, path, lineno)
                   for k, name in zip(range(2, 6), ("left", "top", "width", "height"))]
            conf = _number(fields[6], "conf", path, lineno)
            gt.conf_counts[conf] += 1
            if conf != 1:
                continue
            if frame < 1:
                raise InputError(f"{where(path, lineno)}: frame {frame}, frames start at 1")
            if box[2] < 0 or box[3] < 0:
                raise InputError(f"{where(path, lineno)}: negative width or height {box[2]:g}x{box[3]:g}")
            if (frame, tid) in seen:
                raise InputError(f"{where(path, lineno)}: id {tid} appears twice in frame {frame}")
            seen.add((frame, tid))
            gt.by_frame.setdefault(frame, []).append((tid, box))
    if not gt.by_frame:
        found = ", ".join(f"{c:g} ({n} rows)" for c, n in sorted(gt.conf_counts.items())) or "no rows"
        raise InputError(f"{path}: no rows with conf = 1 (conf values found: {found})")
    for v in gt.by_frame.values():
        v.sort(key=lambda r: r[0])
    return gt


def seqinfo_frames(gt_path):
    """seqLength from the seqinfo.ini beside gt.txt (MOTChallenge layout), or None if there is none."""
    ini = os.path.join(os.path.dirname(os.path.abspath(gt_path)), "seqinfo.ini")
    if not os.path.exists(ini):
        return None
    cp = configparser.ConfigParser()
    try:
        cp.read(ini, encoding="utf-8")
        return cp.getint("Sequence", "seqLength")
    except (configparser.Error, ValueError) as e:
        raise InputError(f"{ini}: no readable [Sequence] seqLength: {e}") from None


def iter_jsonl(path):
    """Yields (line number, parsed object) for every line; a blank line or bad JSON is an InputError."""
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror}") from None
    with f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            raise InputError(f"{where(path, lineno)}: empty line (JSONL needs one JSON object per line)")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where(path, lineno)}: not valid JSON: {e.msg} at column {e.colno}") from None
        if not isinstance(obj, dict):
            raise InputError(f"{where(path, lineno)}: expected a JSON object, found {type(obj).__name__}")
        yield lineno, obj


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class TrackedObject:
    __slots__ = ("track", "cls", "score", "box")

    def __init__(self, track, cls, score, box):
        self.track, self.cls, self.score, self.box = track, cls, score, box


def read_tracks(path):
    """Reads TRACKS.jsonl: line k must be `{"frame": k, "objects": [...]}`. Returns a list of frames
    (index k-1), each a list of TrackedObject. Raises InputError naming the line otherwise.
    """
    frames = []
    for lineno, obj in iter_jsonl(path):
        at = where(path, lineno)
        frame = obj.get("frame")
        if not isinstance(frame, int) or isinstance(frame, bool):
            raise InputError(f"{at}: \"frame\" must be an integer, found {frame!r}")
        if frame != lineno:
            raise InputError(f"{at}: \"frame\" is {frame}, expected {lineno} "
                             "(one line per decoded frame, numbered from 1 in order)")
        objects = obj.get("objects")
        if not isinstance(objects, list):
            raise InputError(f"{at}: \"objects\" must be a list, found {objects!r}")
        out, seen = [], set()
        for j, o in enumerate(objects):
            oat = f"{at}: objects[{j}]"
            if not isinstance(o, dict):
                raise InputError(f"{oat}: expected an object, found {o!r}")
            track = o.get("track")
            if not (isinstance(track, (int, str)) and not isinstance(track, bool)):
                raise InputError(f"{oat}: \"track\" must be an integer or a string, found {track!r}")
            cls = o.get("class")
            if not isinstance(cls, str):
                raise InputError(f"{oat}: \"class\" must be a string, found {cls!r}")
            score = o.get("score")
            if not is_number(score):
                raise InputError(f"{oat}: \"score\" must be a number, found {score!r}")
            box = o.get("box")
            if not (isinstance(box, list) and len(box) == 4 and all(is_number(v) for v in box)):
                raise InputError(f"{oat}: \"box\" must be [left, top, width, height] numbers, found {box!r}")
            if box[2] < 0 or box[3] < 0:
                raise InputError(f"{oat}: \"box\" has a negative width or height: {box!r}")
            if (cls, track) in seen:
                raise InputError(f"{oat}: track {track!r} of class {cls!r} appears twice in this frame")
            seen.add((cls, track))
            out.append(TrackedObject(track, cls, float(score), [float(v) for v in box]))
        frames.append(out)
    return frames


def json_safe(v):
    """NaN and infinities become null, so that the JSON we write is valid JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


def write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(json_safe(data), f, indent=2, allow_nan=False)
        f.write("\n")
