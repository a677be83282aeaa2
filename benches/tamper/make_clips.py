"""Builds tamper test clips from real footage: each sabotage applied to the middle of the clip.

For every source clip and sabotage it writes an MJPEG AVI at the source's frame rate and a JSON
sidecar with the sabotage's onset and end in media seconds. The sabotages:
  cover   a dark cover over 92 % of the frame (sprayed lens, hand, bag), luma × 0.06
  blind   saturation to white: a flashlight into the lens (gain × 4 + 120)
  defocus Gaussian defocus, sigma = 1.2 % of the frame width (focus ring turned)
  moved   the whole view turned 6° and shifted 6 % of the width (camera knocked), kept afterwards
Untouched copies are written too ("none"), so the same decode path is scored for false alarms.

  python make_clips.py OUT_DIR [none:]NAME=SOURCE [...]
SOURCE is a video file or a printf pattern of images (in%06d.jpg, assumed 25 fps). A `none:` prefix
writes only the untouched copy (clips too short for a sabotage to outlast `tamper.start_after`
after the reference is learned).
"""
import json
import os
import sys

import cv2
import numpy as np

SABOTAGES = ["none", "cover", "blind", "defocus", "moved"]


def frames(source):
    if "%" in source:
        k = 1
        while True:
            f = cv2.imread(source % k)
            if f is None:
                return
            yield f
            k += 1
    cap = cv2.VideoCapture(source)
    while True:
        ok, f = cap.read()
        if not ok:
            return
        yield f


def fps_of(source):
    if "%" in source:
        return 25.0
    cap = cv2.VideoCapture(source)
    fps = cap.get(cv2.CAP_PROP_FPS)
    return fps if fps and fps > 0 else 25.0


def apply(kind, f):
    h, w = f.shape[:2]
    if kind == "cover":
        out = f.copy()
        x0, y0 = int(w * 0.04), int(h * 0.04)
        out[y0:, x0:] = (out[y0:, x0:].astype(np.float32) * 0.06).astype(np.uint8)
        return out
    if kind == "blind":
        return np.clip(f.astype(np.float32) * 4.0 + 120.0, 0, 255).astype(np.uint8)
    if kind == "defocus":
        s = 0.012 * w
        return cv2.GaussianBlur(f, (0, 0), s)
    if kind == "moved":
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 6.0, 1.0)
        m[0, 2] += 0.06 * w
        return cv2.warpAffine(f, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return f


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    for arg in sys.argv[2:]:
        only_none = arg.startswith("none:")
        name, source = arg.removeprefix("none:").split("=", 1)
        fps = fps_of(source)
        all_frames = list(frames(source))
        n = len(all_frames)
        a, b = int(n * 0.4), int(n * 0.7)
        for kind in (["none"] if only_none else SABOTAGES):
            path = os.path.join(out_dir, f"{name}-{kind}.avi")
            h, w = all_frames[0].shape[:2]
            vw = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
            for i, f in enumerate(all_frames):
                # "moved" stays moved: nobody turns the camera back
                on = (a <= i < b) if kind != "moved" else (i >= a)
                vw.write(apply(kind, f) if on and kind != "none" else f)
            vw.release()
            meta = {
                "source": name,
                "sabotage": kind,
                "fps": fps,
                "frames": n,
                "onset_s": None if kind == "none" else a / fps,
                "end_s": None if kind in ("none", "moved") else b / fps,
            }
            with open(path + ".json", "w") as fh:
                json.dump(meta, fh)
            print(f"{path}: {n} frames at {fps:.2f} fps, {kind} from frame {a} to {b if kind != 'moved' else n}")


if __name__ == "__main__":
    main()
