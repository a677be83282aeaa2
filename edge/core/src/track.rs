//! Multi-object tracking by detection, in the spirit of SORT and ByteTrack: boxes predicted with a
//! constant-velocity model, matched to detections by IoU (confident detections first, then weak
//! ones to the tracks still unmatched), tentative tracks confirmed after a few hits, and tracks
//! kept through short occlusions. Pure: time is the caller's media time in seconds.
//! Design: `edge/docs/design/analytics.md`.

use std::collections::VecDeque;

use crate::detect::{BoxPx, Detection, ObjectClass};

#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    /// Detections at or above this score can start tracks and are matched first.
    pub high_score: f32,
    /// Detections from here up to `high_score` only extend existing tracks (ByteTrack's second pass).
    pub low_score: f32,
    /// Smallest IoU between a predicted track and a confident detection that counts as a match.
    pub match_iou: f32,
    /// Smallest IoU for the second pass with weak detections.
    pub low_match_iou: f32,
    /// Matches needed before a track is reported.
    pub min_hits: u32,
    /// A track unmatched for longer than this (seconds) is dropped.
    pub max_coast: f64,
    /// A confirmed track unmatched for up to this long is still reported at its predicted place.
    pub report_coast: f64,
    /// Boxes kept per track.
    pub history: usize,
    /// A track whose anchor (bottom centre) has travelled this many of its box heights from where
    /// it was first seen has moved (R8).
    pub min_travel: f32,
    /// A track that has not moved this long (seconds) after it was first seen is scenery (a sign,
    /// a post, a parked car): it is kept, so it cannot start again, but not reported (R8).
    pub static_after: f64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            high_score: 0.5,
            low_score: 0.2,
            match_iou: 0.3,
            low_match_iou: 0.5,
            min_hits: 2,
            max_coast: 1.5,
            report_coast: 0.6,
            history: 64,
            min_travel: 0.5,
            static_after: 10.0,
        }
    }
}

/// A tracked object.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub id: u64,
    pub class: ObjectClass,
    /// The box at `last_seen`.
    pub bbox: BoxPx,
    /// Centre velocity in pixels per second.
    pub velocity: (f32, f32),
    pub score: f32,
    pub first_seen: f64,
    pub last_seen: f64,
    pub hits: u32,
    pub confirmed: bool,
    /// (media time, box) of recent matches, oldest first.
    pub history: VecDeque<(f64, BoxPx)>,
    /// Accumulated score per class, for a stable class when the detector hesitates (car / truck).
    class_votes: [f32; 6],
    /// Anchor (bottom centre) where the track was first seen.
    origin: (f32, f32),
    /// The anchor has travelled `min_travel` box heights from `origin` (R8).
    pub moved: bool,
}

impl Track {
    /// The box predicted at media time `t` (centre moves with the velocity; size is kept).
    pub fn predict(&self, t: f64) -> BoxPx {
        let dt = (t - self.last_seen).max(0.0) as f32;
        BoxPx { x: self.bbox.x + self.velocity.0 * dt, y: self.bbox.y + self.velocity.1 * dt, ..self.bbox }
    }

    /// Speed of the centre as a share of the frame per second: √((vx/W)² + (vy/H)²).
    pub fn speed_normalised(&self, width: f32, height: f32) -> f32 {
        ((self.velocity.0 / width).powi(2) + (self.velocity.1 / height).powi(2)).sqrt()
    }

    /// How long the track has existed, in seconds.
    pub fn age(&self, t: f64) -> f64 {
        t - self.first_seen
    }
}

/// A reported track at one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackView {
    pub id: u64,
    pub class: ObjectClass,
    pub score: f32,
    pub bbox: BoxPx,
    /// Not matched at this frame: the box is a prediction.
    pub coasting: bool,
    pub velocity: (f32, f32),
    pub first_seen: f64,
}

fn class_index(c: ObjectClass) -> usize {
    ObjectClass::ALL.iter().position(|&x| x == c).unwrap_or(0)
}

#[derive(Debug, Clone)]
pub struct Tracker {
    cfg: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
    /// For each detection of the last `update`, the track it was matched to or started.
    assignment: Vec<Option<u64>>,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker { cfg, tracks: Vec::new(), next_id: 1, assignment: Vec::new() }
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// For each detection passed to the last `update`, in order: the id of the track it was
    /// matched to or started, or `None` (too weak, or a weak one no confirmed track took).
    pub fn assignment(&self) -> &[Option<u64>] {
        &self.assignment
    }

    /// Whether any track may be an object at `t`: tentative, moved, or still young (not scenery,
    /// R8).
    pub fn has_live_tracks(&self, t: f64) -> bool {
        self.tracks.iter().any(|tr| !self.is_scenery(tr, t))
    }

    fn is_scenery(&self, tr: &Track, t: f64) -> bool {
        tr.confirmed && !tr.moved && t - tr.first_seen >= self.cfg.static_after
    }

    /// Forgets every track (a gap in the picture); ids are never reused.
    pub fn clear(&mut self) {
        self.tracks.clear();
    }

    /// Folds in the detections of the frame at media time `t` and returns the tracks to report.
    pub fn update(&mut self, t: f64, detections: &[Detection]) -> Vec<TrackView> {
        let cfg = self.cfg.clone();
        let predicted: Vec<BoxPx> = self.tracks.iter().map(|tr| tr.predict(t)).collect();
        let mut track_taken = vec![false; self.tracks.len()];
        let mut assignment = vec![None; detections.len()];
        let (high, low): (Vec<Indexed<'_>>, Vec<Indexed<'_>>) = detections
            .iter()
            .enumerate()
            .filter(|(_, d)| d.score >= cfg.low_score)
            .partition(|(_, d)| d.score >= cfg.high_score);

        // Pass 1: confident detections against every track. Pass 2: weak detections against the
        // confirmed tracks left over. Greedy by IoU, highest first.
        let mut unmatched_high = Vec::new();
        for (pass, dets, min_iou) in [(1, &high, cfg.match_iou), (2, &low, cfg.low_match_iou)] {
            let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
            for (di, (_, d)) in dets.iter().enumerate() {
                for (ti, tr) in self.tracks.iter().enumerate() {
                    if track_taken[ti] || !tr.class.same_family(d.class) || (pass == 2 && !tr.confirmed) {
                        continue;
                    }
                    let iou = predicted[ti].iou(&d.bbox);
                    if iou >= min_iou {
                        pairs.push((iou, di, ti));
                    }
                }
            }
            pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut det_taken = vec![false; dets.len()];
            for (_, di, ti) in pairs {
                if det_taken[di] || track_taken[ti] {
                    continue;
                }
                det_taken[di] = true;
                track_taken[ti] = true;
                self.tracks[ti].absorb(t, dets[di].1, &cfg);
                assignment[dets[di].0] = Some(self.tracks[ti].id);
            }
            if pass == 1 {
                unmatched_high = dets.iter().zip(&det_taken).filter(|(_, taken)| !**taken).map(|(d, _)| *d).collect();
            }
        }

        // Unmatched: tentative tracks die at once; confirmed ones coast until max_coast.
        let mut i = 0;
        self.tracks.retain(|tr| {
            let keep = track_taken[i] || (tr.confirmed && t - tr.last_seen <= cfg.max_coast);
            i += 1;
            keep
        });
        for (index, d) in unmatched_high {
            let id = self.next_id;
            self.next_id += 1;
            assignment[index] = Some(id);
            let mut votes = [0.0; 6];
            votes[class_index(d.class)] = d.score;
            let mut history = VecDeque::new();
            history.push_back((t, d.bbox));
            self.tracks.push(Track {
                id,
                class: d.class,
                bbox: d.bbox,
                velocity: (0.0, 0.0),
                score: d.score,
                first_seen: t,
                last_seen: t,
                hits: 1,
                confirmed: cfg.min_hits <= 1,
                history,
                class_votes: votes,
                origin: anchor(&d.bbox),
                moved: false,
            });
        }
        self.assignment = assignment;
        self.report(t)
    }

    /// The tracks to report at `t` without new detections (a frame the detector skipped).
    pub fn report(&self, t: f64) -> Vec<TrackView> {
        self.tracks
            .iter()
            .filter(|tr| tr.confirmed && !self.is_scenery(tr, t) && t - tr.last_seen <= self.cfg.report_coast)
            .map(|tr| TrackView {
                id: tr.id,
                class: tr.class,
                score: tr.score,
                bbox: tr.predict(t),
                coasting: tr.last_seen < t,
                velocity: tr.velocity,
                first_seen: tr.first_seen,
            })
            .collect()
    }
}

/// A detection with its index in the caller's list.
type Indexed<'a> = (usize, &'a Detection);

/// Bottom centre of a box: where an object stands.
fn anchor(b: &BoxPx) -> (f32, f32) {
    (b.x + b.w / 2.0, b.y + b.h)
}

impl Track {
    fn absorb(&mut self, t: f64, d: &Detection, cfg: &TrackerConfig) {
        let dt = (t - self.last_seen) as f32;
        if dt > 0.0 {
            let (ox, oy) = self.bbox.centre();
            let (nx, ny) = d.bbox.centre();
            let inst = ((nx - ox) / dt, (ny - oy) / dt);
            self.velocity = if self.hits == 1 {
                inst
            } else {
                (0.6 * self.velocity.0 + 0.4 * inst.0, 0.6 * self.velocity.1 + 0.4 * inst.1)
            };
        }
        if !self.moved {
            let (ax, ay) = anchor(&d.bbox);
            let travel = ((ax - self.origin.0).powi(2) + (ay - self.origin.1).powi(2)).sqrt();
            self.moved = travel >= cfg.min_travel * d.bbox.h;
        }
        self.bbox = d.bbox;
        self.score = d.score;
        self.last_seen = t;
        self.hits += 1;
        if self.hits >= cfg.min_hits {
            self.confirmed = true;
        }
        self.class_votes[class_index(d.class)] += d.score;
        let best = (0..6).max_by(|&a, &b| self.class_votes[a].total_cmp(&self.class_votes[b])).unwrap_or(0);
        self.class = ObjectClass::ALL[best];
        self.history.push_back((t, d.bbox));
        while self.history.len() > cfg.history {
            self.history.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(x: f32, y: f32, score: f32) -> Detection {
        Detection { class: ObjectClass::Person, score, bbox: BoxPx::new(x, y, 20.0, 50.0) }
    }

    #[test]
    fn each_detection_is_assigned_its_track() {
        let mut tr = Tracker::new(TrackerConfig::default());
        tr.update(0.0, &[person(10.0, 40.0, 0.9), person(200.0, 40.0, 0.9)]);
        assert_eq!(tr.assignment(), &[Some(1), Some(2)]);
        // a weak detection next to a tentative track is not taken (only confirmed tracks take
        // weak ones); one far from everything neither
        tr.update(0.1, &[person(500.0, 40.0, 0.3), person(201.0, 40.0, 0.9), person(11.0, 40.0, 0.3)]);
        assert_eq!(tr.assignment(), &[None, Some(2), None]);
        tr.update(0.2, &[person(202.0, 40.0, 0.3)]);
        assert_eq!(tr.assignment(), &[Some(2)], "a weak detection extends the confirmed track");
    }

    #[test]
    fn a_walking_person_keeps_one_id() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut ids = Vec::new();
        for k in 0..20 {
            let t = k as f64 * 0.1;
            let out = tr.update(t, &[person(10.0 + 3.0 * k as f32, 40.0, 0.9)]);
            if k == 0 {
                assert!(out.is_empty(), "tentative until min_hits");
            } else {
                assert_eq!(out.len(), 1);
                ids.push(out[0].id);
            }
        }
        assert!(ids.iter().all(|&i| i == ids[0]));
        let v = tr.tracks()[0].velocity;
        assert!((v.0 - 30.0).abs() < 1.0 && v.1.abs() < 1e-3, "velocity {v:?}");
    }

    #[test]
    fn a_short_occlusion_keeps_the_id_and_is_bridged_by_prediction() {
        let mut tr = Tracker::new(TrackerConfig::default());
        for k in 0..5 {
            tr.update(k as f64 * 0.1, &[person(10.0 + 5.0 * k as f32, 40.0, 0.9)]);
        }
        let id = tr.tracks()[0].id;
        // hidden from 0.4 s on: at 0.5 s it is reported at its predicted place (within report_coast)
        let out = tr.update(0.5, &[]);
        assert_eq!(out.len(), 1);
        assert!(out[0].coasting);
        assert!((out[0].bbox.x - 35.0).abs() < 2.0, "predicted x {}", out[0].bbox.x);
        for k in 6..10 {
            tr.update(k as f64 * 0.1, &[]);
        }
        let out = tr.update(1.0, &[person(60.0, 40.0, 0.9)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].id, id, "re-found after 0.6 s of occlusion");
        assert!(!out[0].coasting);
    }

    #[test]
    fn lost_tracks_expire_and_new_objects_get_new_ids() {
        let mut tr = Tracker::new(TrackerConfig::default());
        tr.update(0.0, &[person(10.0, 40.0, 0.9)]);
        tr.update(0.1, &[person(12.0, 40.0, 0.9)]);
        let first = tr.tracks()[0].id;
        assert!(tr.update(2.0, &[]).is_empty());
        assert!(tr.tracks().is_empty(), "dropped after max_coast");
        tr.update(2.1, &[person(12.0, 40.0, 0.9)]);
        let out = tr.update(2.2, &[person(13.0, 40.0, 0.9)]);
        assert_ne!(out[0].id, first);
    }

    #[test]
    fn weak_detections_extend_tracks_but_never_start_them() {
        let mut tr = Tracker::new(TrackerConfig::default());
        tr.update(0.0, &[person(10.0, 40.0, 0.9)]);
        tr.update(0.1, &[person(11.0, 40.0, 0.9)]);
        // the person is half hidden: the detector is unsure
        let out = tr.update(0.2, &[person(12.0, 40.0, 0.3), person(200.0, 40.0, 0.3)]);
        assert_eq!(out.len(), 1);
        assert!(!out[0].coasting, "the weak detection matched");
        assert_eq!(tr.tracks().len(), 1, "a weak detection alone starts no track");
    }

    #[test]
    fn two_people_crossing_keep_their_ids() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut a_id = None;
        let mut b_id = None;
        for k in 0..30 {
            let t = k as f64 * 0.1;
            let a = person(10.0 + 6.0 * k as f32, 40.0, 0.9);
            let b = person(190.0 - 6.0 * k as f32, 44.0, 0.9);
            let out = tr.update(t, &[a, b]);
            for v in out {
                let moving_right = v.velocity.0 > 0.0;
                if k >= 20 {
                    // after the crossing the ids still follow their own directions
                    if moving_right {
                        assert_eq!(Some(v.id), a_id);
                    } else {
                        assert_eq!(Some(v.id), b_id);
                    }
                } else if k == 5 {
                    if moving_right {
                        a_id = Some(v.id);
                    } else {
                        b_id = Some(v.id);
                    }
                }
            }
        }
        assert!(a_id.is_some() && b_id.is_some() && a_id != b_id);
    }

    #[test]
    fn vehicle_class_follows_the_majority() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let car = |x: f32, class, s| Detection { class, score: s, bbox: BoxPx::new(x, 10.0, 60.0, 30.0) };
        tr.update(0.0, &[car(10.0, ObjectClass::Car, 0.9)]);
        tr.update(0.1, &[car(12.0, ObjectClass::Truck, 0.6)]);
        let out = tr.update(0.2, &[car(14.0, ObjectClass::Car, 0.8)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class, ObjectClass::Car);
        assert_eq!(tr.tracks().len(), 1, "car and truck boxes join one track");
    }

    #[test]
    fn scenery_that_never_moves_stops_being_reported() {
        // R8: a post detected as a person at every frame for 12 s, and a walker
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut post_ids = std::collections::BTreeSet::new();
        let mut walker_seen_late = false;
        for k in 0..=120 {
            let t = k as f64 * 0.1;
            // the post jitters by a pixel; the walker covers a box height (50 px) in 5 s
            let jitter = if k % 2 == 0 { 1.0 } else { 0.0 };
            let out = tr.update(t, &[person(300.0 + jitter, 40.0, 0.8), person(10.0 + k as f32, 200.0, 0.8)]);
            let post = out.iter().find(|v| v.bbox.x >= 290.0);
            if t < 9.9 {
                assert!(t < 0.05 || post.is_some(), "reported while young, t = {t}");
            } else if t > 10.05 {
                assert!(post.is_none(), "scenery after 10 s, t = {t}");
            }
            post_ids.extend(post.map(|v| v.id));
            walker_seen_late |= t > 10.05 && out.iter().any(|v| v.bbox.x < 290.0);
        }
        assert!(walker_seen_late, "a walker stays reported");
        assert_eq!(post_ids.len(), 1);
        // scenery alone does not keep the detector busy (S2)
        let mut scenery_only = tr.clone();
        scenery_only.tracks.retain(|t| t.bbox.x >= 290.0);
        assert!(tr.has_live_tracks(12.0) && !scenery_only.has_live_tracks(12.0));
        // the post is kept, so it does not come back as a new track; once it moves it is reported
        // again under its own id
        let mut back = None;
        for k in 121..=160 {
            let t = k as f64 * 0.1;
            let out = tr.update(t, &[person(300.0 + 3.0 * (k - 120) as f32, 40.0, 0.8)]);
            back = back.or(out.iter().find(|v| v.bbox.x >= 290.0).map(|v| v.id));
        }
        assert_eq!(back, post_ids.first().copied());
    }
}
