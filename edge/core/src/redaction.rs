//! Dynamic masking of people: which parts of a frame to mask, from the newest detector result
//! the masker has, the motion of the frame, and the time since that result. Pure: time is media
//! time in seconds and boxes are shares of the frame. The pixels are filled by `vakt-media`.
//! Design: `edge/docs/design/privacy.md` (D1–D8 are cited below).

use crate::detect::ObjectClass;

/// A rectangle in shares of the frame: left, top, width, height.
pub type NormRect = [f32; 4];

/// How masked pixels look (`[redact] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskMode {
    /// Filled with black (the static masks' fill).
    Solid,
    /// Each pixel replaced by the mean of its block of a coarse grid.
    Pixelate,
    /// The coarse grid's means, interpolated: smooth, but with no more detail than `Pixelate`.
    Blur,
}

impl MaskMode {
    pub const ALL: [MaskMode; 3] = [MaskMode::Solid, MaskMode::Pixelate, MaskMode::Blur];

    pub fn as_str(self) -> &'static str {
        match self {
            MaskMode::Solid => "solid",
            MaskMode::Pixelate => "pixelate",
            MaskMode::Blur => "blur",
        }
    }

    pub fn parse(s: &str) -> Option<MaskMode> {
        MaskMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// The masker's parameters (`[redact]`).
#[derive(Debug, Clone, PartialEq)]
pub struct MaskParams {
    /// Seconds a person's mask is kept after the detector last saw them (D3).
    pub hold: f64,
    /// Added on every side of a person box, as a share of the box's width and height (D2).
    pub margin: f32,
    /// Extra margin per second since the box was seen, as a share of its size (D3).
    pub spread: f32,
    /// Detector results older than this (seconds) are not trusted: the whole frame is masked (D5).
    pub max_staleness: f64,
    /// Mask moving regions no detection explains (D4).
    pub motion: bool,
    /// Subject access: this track stays visible, everyone else is masked (D7).
    pub keep_track: Option<u64>,
}

impl Default for MaskParams {
    fn default() -> Self {
        MaskParams { hold: 1.0, margin: 0.2, spread: 0.25, max_staleness: 0.5, motion: true, keep_track: None }
    }
}

/// One object the detector found at a run: a person to mask, or something else that may explain
/// motion. Boxes and velocities in shares of the frame (per second).
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    /// The track the detection was matched to, if any.
    pub track: Option<u64>,
    pub class: ObjectClass,
    pub bbox: NormRect,
    pub velocity: (f32, f32),
    /// `Some` for a face from the face detector (D9): masked as a person, never tracked; the inner
    /// `Option` is the track whose person box holds the face's centre, if any.
    pub face_of: Option<Option<u64>>,
}

impl Sighting {
    /// An object the detector found.
    pub fn object(track: Option<u64>, class: ObjectClass, bbox: NormRect, velocity: (f32, f32)) -> Sighting {
        Sighting { track, class, bbox, velocity, face_of: None }
    }

    /// A face, on the person box of track `of` if any, moving with that track.
    pub fn face(of: Option<u64>, bbox: NormRect, velocity: (f32, f32)) -> Sighting {
        Sighting { track: None, class: ObjectClass::Person, bbox, velocity, face_of: Some(of) }
    }
}

/// Everything one detector run found, stamped with the media time of the frame it ran on.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorResult {
    pub t: f64,
    pub sightings: Vec<Sighting>,
}

/// What the motion detector saw in the frame being masked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MotionInput {
    /// Bounding boxes of the moving regions.
    pub blobs: Vec<NormRect>,
    /// Most of the frame changed at once: motion says nothing about where people are.
    pub global_change: bool,
}

/// Why a whole frame is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullReason {
    /// No detector result yet.
    NoResult,
    /// The newest result is older than `max_staleness` (stalled, slow or failed detector).
    Stale,
    /// The picture changed as a whole (lights, a knock): motion cannot be trusted this frame.
    GlobalChange,
}

impl FullReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FullReason::NoResult => "no_detection_yet",
            FullReason::Stale => "detector_stale",
            FullReason::GlobalChange => "global_change",
        }
    }
}

/// What to mask in one frame. Painted in order: `motion`, then `keep` is cleared, then `people`
/// (D7: another person's mask wins over the kept track's window).
#[derive(Debug, Clone, PartialEq)]
pub enum MaskPlan {
    Full(FullReason),
    Regions { motion: Vec<NormRect>, keep: Vec<NormRect>, people: Vec<NormRect> },
}

impl MaskPlan {
    pub fn is_full(&self) -> bool {
        matches!(self, MaskPlan::Full(_))
    }
}

/// A person (or a tracked object, for explaining motion) last seen at `seen`.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    track: Option<u64>,
    class: ObjectClass,
    bbox: NormRect,
    velocity: (f32, f32),
    seen: f64,
}

/// Keeps the newest detector result and the held masks, and plans each frame's masks.
#[derive(Debug, Clone)]
pub struct MaskPlanner {
    params: MaskParams,
    last_result: Option<f64>,
    held: Vec<Held>,
}

impl MaskPlanner {
    pub fn new(params: MaskParams) -> MaskPlanner {
        MaskPlanner { params, last_result: None, held: Vec::new() }
    }

    pub fn params(&self) -> &MaskParams {
        &self.params
    }

    /// Media time of the frame the newest result was computed on.
    pub fn last_result(&self) -> Option<f64> {
        self.last_result
    }

    /// Folds in a detector result (D1). Results older than the newest one are ignored.
    pub fn add_result(&mut self, r: &DetectorResult) {
        if self.last_result.is_some_and(|last| r.t < last) {
            return;
        }
        self.last_result = Some(r.t);
        for s in &r.sightings {
            // D9: in subject access, a face on the kept person's box is theirs and stays visible
            if s.face_of.is_some_and(|of| of.is_some() && of == self.params.keep_track) {
                continue;
            }
            let h = Held { track: s.track, class: s.class, bbox: s.bbox, velocity: s.velocity, seen: r.t };
            // a track's newest sighting replaces its older one; untracked sightings add up
            match s.track.and_then(|id| self.held.iter_mut().find(|x| x.track == Some(id))) {
                Some(old) => *old = h,
                None => self.held.push(h),
            }
        }
        let hold = self.params.hold;
        self.held.retain(|h| r.t - h.seen <= hold);
    }

    /// Forgets every result and held mask (a gap in the picture): the next frames are masked
    /// whole until a new result arrives (D5).
    pub fn clear(&mut self) {
        self.last_result = None;
        self.held.clear();
    }

    /// The masks for the frame at media time `t`. Never waits: it uses what it has (D6).
    pub fn plan(&self, t: f64, motion: &MotionInput) -> MaskPlan {
        let p = &self.params;
        let Some(last) = self.last_result else { return MaskPlan::Full(FullReason::NoResult) };
        if t - last > p.max_staleness {
            return MaskPlan::Full(FullReason::Stale);
        }
        if p.motion && motion.global_change {
            return MaskPlan::Full(FullReason::GlobalChange);
        }
        let live = self.held.iter().filter(|h| t - h.seen <= p.hold);
        let (mut people, mut keep, mut explain) = (Vec::new(), Vec::new(), Vec::new());
        for h in live {
            let region = swept(h, t, p.margin, p.spread);
            if h.class != ObjectClass::Person {
                // a vehicle explains its own motion (D4); people on bicycles and motorcycles are
                // detected as people
                if matches!(h.class, ObjectClass::Car | ObjectClass::Bus | ObjectClass::Truck) {
                    explain.push(region);
                }
            } else if p.keep_track.is_some() && h.track == p.keep_track {
                keep.push(region);
            } else {
                people.push(region);
            }
        }
        let motion = if p.motion {
            motion
                .blobs
                .iter()
                .filter(|b| !explain.iter().any(|e| inside_share(b, e) >= 0.5))
                .map(|b| grow(*b, MOTION_MARGIN))
                .collect()
        } else {
            Vec::new()
        };
        MaskPlan::Regions { motion, keep, people }
    }
}

/// D2, D3: the box where its motion predicts it at `t`, with the margin plus `spread` per second
/// since it was seen (the prediction's uncertainty grows with time).
fn swept(h: &Held, t: f64, margin: f32, spread: f32) -> NormRect {
    let dt = (t - h.seen).max(0.0) as f32;
    let [x, y, w, bh] = h.bbox;
    let (px, py) = (x + h.velocity.0 * dt, y + h.velocity.1 * dt);
    let m = margin + spread * dt;
    [px - w * m, py - bh * m, w * (1.0 + 2.0 * m), bh * (1.0 + 2.0 * m)]
}

/// Added on every side of a moving region, as a share of its size (D4). Smaller than a person's
/// margin: a region's box already spans all of its moving pixels.
pub const MOTION_MARGIN: f32 = 0.15;

/// `r` widened by `m` of its size on every side.
fn grow(r: NormRect, m: f32) -> NormRect {
    [r[0] - r[2] * m, r[1] - r[3] * m, r[2] * (1.0 + 2.0 * m), r[3] * (1.0 + 2.0 * m)]
}

/// The share of `a`'s area that lies inside `b`.
fn inside_share(a: &NormRect, b: &NormRect) -> f32 {
    let w = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let h = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    let area = a[2] * a[3];
    if w <= 0.0 || h <= 0.0 || area <= 0.0 { 0.0 } else { w * h / area }
}

/// Pixel bounds `(x0, y0, x1, y1)` of a normalised rectangle in a `width` × `height` image,
/// widened outward to whole pixels and clipped; `None` when nothing is left (or the rectangle is
/// malformed: NaN, negative size).
pub fn pixel_bounds(r: &NormRect, width: u32, height: u32) -> Option<(u32, u32, u32, u32)> {
    if r.iter().any(|v| !v.is_finite()) || r[2] <= 0.0 || r[3] <= 0.0 {
        return None;
    }
    let clamp = |v: f32, max: u32| -> u32 { (v.max(0.0) as u32).min(max) };
    let x0 = clamp((r[0] as f64 * width as f64).floor() as f32, width);
    let y0 = clamp((r[1] as f64 * height as f64).floor() as f32, height);
    let x1 = clamp((((r[0] + r[2]) as f64) * width as f64).ceil() as f32, width);
    let y1 = clamp((((r[1] + r[3]) as f64) * height as f64).ceil() as f32, height);
    (x1 > x0 && y1 > y0).then_some((x0, y0, x1, y1))
}

/// Paints a plan into a `width` × `height` mask (255 = masked, 0 = visible), in the plan's order.
pub fn render(plan: &MaskPlan, width: u32, height: u32) -> Vec<u8> {
    let mut m = vec![0u8; width as usize * height as usize];
    match plan {
        MaskPlan::Full(_) => m.fill(255),
        MaskPlan::Regions { motion, keep, people } => {
            for (rects, v) in [(motion, 255u8), (keep, 0), (people, 255)] {
                for r in rects {
                    if let Some((x0, y0, x1, y1)) = pixel_bounds(r, width, height) {
                        for y in y0..y1 {
                            let row = y as usize * width as usize;
                            m[row + x0 as usize..row + x1 as usize].fill(v);
                        }
                    }
                }
            }
        }
    }
    m
}

/// How well one frame's mask hides a set of person boxes (the benchmarks and tests score
/// `vakt redact` output with it): boxes in pixels `[left, top, width, height]`, clipped to the
/// frame.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MaskScore {
    /// Boxes with at least `covered_share` of their pixels masked.
    pub covered: u64,
    /// Boxes scored (those with pixels inside the frame).
    pub boxes: u64,
    /// Masked pixels outside every box.
    pub over_masked: u64,
    /// Pixels outside every box.
    pub outside: u64,
}

impl MaskScore {
    /// Scores `mask` (`width` × `height`, non-zero = masked) against `boxes`.
    pub fn frame(mask: &[u8], width: u32, height: u32, boxes: &[[f64; 4]], covered_share: f64) -> MaskScore {
        let (w, h) = (width as usize, height as usize);
        let mut inside = vec![false; w * h];
        let mut score = MaskScore::default();
        for b in boxes {
            let x0 = b[0].floor().clamp(0.0, w as f64) as usize;
            let y0 = b[1].floor().clamp(0.0, h as f64) as usize;
            let x1 = (b[0] + b[2]).ceil().clamp(0.0, w as f64) as usize;
            let y1 = (b[1] + b[3]).ceil().clamp(0.0, h as f64) as usize;
            if x1 <= x0 || y1 <= y0 {
                continue;
            }
            let mut masked = 0usize;
            for y in y0..y1 {
                for x in x0..x1 {
                    inside[y * w + x] = true;
                    masked += (mask[y * w + x] != 0) as usize;
                }
            }
            score.boxes += 1;
            if masked as f64 >= covered_share * ((x1 - x0) * (y1 - y0)) as f64 {
                score.covered += 1;
            }
        }
        for (m, i) in mask.iter().zip(&inside) {
            if !i {
                score.outside += 1;
                score.over_masked += (*m != 0) as u64;
            }
        }
        score
    }

    pub fn add(&mut self, o: MaskScore) {
        self.covered += o.covered;
        self.boxes += o.boxes;
        self.over_masked += o.over_masked;
        self.outside += o.outside;
    }

    /// Share of boxes covered.
    pub fn coverage(&self) -> f64 {
        if self.boxes == 0 { 1.0 } else { self.covered as f64 / self.boxes as f64 }
    }

    /// Share of the pixels outside every box that are masked.
    pub fn over_masking(&self) -> f64 {
        if self.outside == 0 { 0.0 } else { self.over_masked as f64 / self.outside as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(track: Option<u64>, bbox: NormRect, velocity: (f32, f32)) -> Sighting {
        Sighting::object(track, ObjectClass::Person, bbox, velocity)
    }

    fn planner(params: MaskParams) -> MaskPlanner {
        MaskPlanner::new(params)
    }

    fn still() -> MotionInput {
        MotionInput::default()
    }

    #[test]
    fn nothing_is_shown_before_the_first_result_or_after_it_goes_stale() {
        let mut p = planner(MaskParams::default());
        assert_eq!(p.plan(0.0, &still()), MaskPlan::Full(FullReason::NoResult));
        p.add_result(&DetectorResult { t: 1.0, sightings: vec![] });
        assert!(!p.plan(1.0, &still()).is_full());
        assert!(!p.plan(1.5, &still()).is_full(), "exactly max_staleness old is still trusted");
        assert_eq!(p.plan(1.51, &still()), MaskPlan::Full(FullReason::Stale));
        // recovers with the next result
        p.add_result(&DetectorResult { t: 3.0, sightings: vec![] });
        assert!(!p.plan(3.1, &still()).is_full());
        p.clear();
        assert_eq!(p.plan(3.1, &still()), MaskPlan::Full(FullReason::NoResult));
    }

    #[test]
    fn a_global_change_masks_the_whole_frame() {
        let mut p = planner(MaskParams::default());
        p.add_result(&DetectorResult { t: 0.0, sightings: vec![] });
        let m = MotionInput { blobs: vec![], global_change: true };
        assert_eq!(p.plan(0.1, &m), MaskPlan::Full(FullReason::GlobalChange));
    }

    #[test]
    fn a_person_is_masked_with_a_margin_follows_its_motion_and_is_held() {
        let params = MaskParams { margin: 0.1, spread: 0.5, hold: 1.0, max_staleness: 10.0, ..MaskParams::default() };
        let mut p = planner(params);
        p.add_result(&DetectorResult { t: 0.0, sightings: vec![person(Some(1), [0.4, 0.2, 0.1, 0.4], (0.1, 0.0))] });
        let MaskPlan::Regions { people, .. } = p.plan(0.0, &still()) else { panic!() };
        let want = [0.39, 0.16, 0.12, 0.48];
        assert!(people[0].iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{people:?}");
        // half a second later: moved right by 0.05, margin 0.1 + 0.25
        let MaskPlan::Regions { people, .. } = p.plan(0.5, &still()) else { panic!() };
        let want = [0.45 - 0.035, 0.2 - 0.14, 0.1 + 0.07, 0.4 + 0.28];
        assert!(people[0].iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{people:?}");
        // the hold ends one second after the last sighting
        let MaskPlan::Regions { people, .. } = p.plan(1.0, &still()) else { panic!() };
        assert_eq!(people.len(), 1);
        let MaskPlan::Regions { people, .. } = p.plan(1.01, &still()) else { panic!() };
        assert!(people.is_empty());
    }

    #[test]
    fn a_new_sighting_replaces_the_tracks_old_one_but_not_others() {
        let mut p = planner(MaskParams { hold: 2.0, ..MaskParams::default() });
        p.add_result(&DetectorResult {
            t: 0.0,
            sightings: vec![
                person(Some(1), [0.1, 0.1, 0.1, 0.1], (0.0, 0.0)),
                person(None, [0.6, 0.6, 0.1, 0.1], (0.0, 0.0)),
            ],
        });
        p.add_result(&DetectorResult { t: 0.2, sightings: vec![person(Some(1), [0.2, 0.1, 0.1, 0.1], (0.0, 0.0))] });
        let MaskPlan::Regions { people, .. } = p.plan(0.2, &still()) else { panic!() };
        assert_eq!(people.len(), 2, "track 1 once, the untracked sighting held: {people:?}");
        // an older result arriving late changes nothing
        p.add_result(&DetectorResult { t: 0.1, sightings: vec![person(Some(9), [0.5, 0.1, 0.1, 0.1], (0.0, 0.0))] });
        let MaskPlan::Regions { people: again, .. } = p.plan(0.2, &still()) else { panic!() };
        assert_eq!(again, people);
    }

    #[test]
    fn motion_is_masked_unless_a_vehicle_explains_it() {
        let mut p = planner(MaskParams { margin: 0.0, ..MaskParams::default() });
        let car = Sighting::object(Some(3), ObjectClass::Car, [0.5, 0.5, 0.3, 0.2], (0.0, 0.0));
        p.add_result(&DetectorResult { t: 0.0, sightings: vec![car] });
        let m = MotionInput { blobs: vec![[0.55, 0.55, 0.1, 0.1], [0.1, 0.1, 0.05, 0.1]], global_change: false };
        let MaskPlan::Regions { motion, people, .. } = p.plan(0.1, &m) else { panic!() };
        // the unexplained blob, grown by MOTION_MARGIN on every side
        let want = [
            0.1 - 0.05 * MOTION_MARGIN,
            0.1 - 0.1 * MOTION_MARGIN,
            0.05 * (1.0 + 2.0 * MOTION_MARGIN),
            0.1 * (1.0 + 2.0 * MOTION_MARGIN),
        ];
        assert_eq!(motion.len(), 1);
        assert!(motion[0].iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{motion:?}");
        assert!(people.is_empty(), "a car is not masked");
        let p = planner(MaskParams { motion: false, ..MaskParams::default() });
        let mut p2 = p.clone();
        p2.add_result(&DetectorResult { t: 0.0, sightings: vec![] });
        let MaskPlan::Regions { motion, .. } = p2.plan(0.1, &m) else { panic!() };
        assert!(motion.is_empty());
    }

    #[test]
    fn subject_access_keeps_one_track_and_masks_everyone_over_it() {
        let mut p = planner(MaskParams { keep_track: Some(7), margin: 0.0, spread: 0.0, ..MaskParams::default() });
        p.add_result(&DetectorResult {
            t: 0.0,
            sightings: vec![
                person(Some(7), [0.0, 0.0, 0.5, 1.0], (0.0, 0.0)),
                person(Some(8), [0.4, 0.0, 0.2, 0.5], (0.0, 0.0)),
            ],
        });
        // motion all over the frame
        let m = MotionInput { blobs: vec![[0.0, 0.0, 1.0, 1.0]], global_change: false };
        let plan = p.plan(0.0, &m);
        let mask = render(&plan, 10, 2);
        // row 0: kept 0..5 except the other person's 4..6; masked by motion from 6
        assert_eq!(&mask[0..10], &[0, 0, 0, 0, 255, 255, 255, 255, 255, 255]);
        assert_eq!(&mask[10..20], &[0, 0, 0, 0, 0, 255, 255, 255, 255, 255]);
    }

    #[test]
    fn faces_are_masked_and_held_but_the_kept_persons_own_face_stays_visible() {
        let params = MaskParams { keep_track: Some(7), margin: 0.0, spread: 0.0, ..MaskParams::default() };
        let mut p = planner(params);
        p.add_result(&DetectorResult {
            t: 0.0,
            sightings: vec![
                person(Some(7), [0.0, 0.0, 0.5, 1.0], (0.0, 0.0)),
                Sighting::face(Some(7), [0.1, 0.0, 0.2, 0.5], (0.0, 0.0)),
                // a face the person detector missed, and one on someone untracked
                Sighting::face(None, [0.7, 0.0, 0.2, 0.5], (0.0, 0.0)),
                Sighting::face(Some(8), [0.5, 0.5, 0.1, 0.5], (0.0, 0.0)),
            ],
        });
        let MaskPlan::Regions { keep, people, .. } = p.plan(0.5, &still()) else { panic!() };
        assert_eq!(keep.len(), 1);
        assert_eq!(people, vec![[0.7, 0.0, 0.2, 0.5], [0.5, 0.5, 0.1, 0.5]]);
        // held like any person, and gone after the hold
        p.add_result(&DetectorResult { t: 1.0, sightings: vec![] });
        let MaskPlan::Regions { people, .. } = p.plan(1.0, &still()) else { panic!() };
        assert_eq!(people.len(), 2);
        p.add_result(&DetectorResult { t: 1.2, sightings: vec![] });
        let MaskPlan::Regions { people, .. } = p.plan(1.2, &still()) else { panic!() };
        assert!(people.is_empty());
        // without subject access every face is masked
        let mut p = planner(MaskParams { margin: 0.0, spread: 0.0, ..MaskParams::default() });
        p.add_result(&DetectorResult {
            t: 0.0,
            sightings: vec![Sighting::face(Some(7), [0.1, 0.0, 0.2, 0.5], (0.0, 0.0))],
        });
        let MaskPlan::Regions { people, .. } = p.plan(0.0, &still()) else { panic!() };
        assert_eq!(people.len(), 1);
    }

    #[test]
    fn mask_scores_count_covered_boxes_and_masked_background() {
        // 10 x 2: the left 5 columns masked; box A (cols 0..4) covered, box B (cols 3..8) 40 %
        let mut mask = vec![0u8; 20];
        for y in 0..2 {
            mask[y * 10..y * 10 + 5].fill(255);
        }
        let s = MaskScore::frame(&mask, 10, 2, &[[0.0, 0.0, 4.0, 2.0], [3.0, 0.0, 5.0, 2.0]], 0.9);
        assert_eq!((s.covered, s.boxes), (1, 2));
        // outside both boxes: cols 8, 9 (4 px), none masked
        assert_eq!((s.over_masked, s.outside), (0, 4));
        let s = MaskScore::frame(&mask, 10, 2, &[[6.0, 0.0, 2.0, 2.0], [-5.0, -5.0, 2.0, 2.0]], 0.9);
        assert_eq!((s.covered, s.boxes, s.over_masked, s.outside), (0, 1, 10, 16));
        assert!((s.over_masking() - 10.0 / 16.0).abs() < 1e-12);
    }

    #[test]
    fn pixel_bounds_widen_outward_and_refuse_malformed_boxes() {
        assert_eq!(pixel_bounds(&[0.15, 0.25, 0.2, 0.1], 10, 10), Some((1, 2, 4, 4)));
        assert_eq!(pixel_bounds(&[-0.5, -0.5, 2.0, 2.0], 10, 10), Some((0, 0, 10, 10)));
        assert_eq!(pixel_bounds(&[f32::NAN, 0.0, 0.1, 0.1], 10, 10), None);
        assert_eq!(pixel_bounds(&[0.1, 0.1, -0.1, 0.1], 10, 10), None);
        assert_eq!(pixel_bounds(&[1.2, 0.1, 0.1, 0.1], 10, 10), None);
        assert!(render(&MaskPlan::Full(FullReason::Stale), 4, 3).iter().all(|&v| v == 255));
    }
}
