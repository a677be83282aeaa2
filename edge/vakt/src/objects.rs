//! Object analysis for one camera: the detector on its media-time schedule, the tracker, and the
//! rules (presence, line crossing, loitering, crowding, running). Design:
//! `edge/docs/design/analytics.md` (schedule S1–S4) and `edge/docs/design/rules.md`.

use anyhow::Context;

use vakt_core::config::Config;
use vakt_core::detect::{BoxPx, ObjectClass};
use vakt_core::redaction::{DetectorResult, Sighting};
use vakt_core::rules::{RuleEngine, RuleEvent, RuleObject};
use vakt_core::track::{TrackView, Tracker, TrackerConfig};
use vakt_media::StaticMaskedFrame;
use vakt_vision::{BgrFrame, Detector, MotionResult, YoloxParams, YoloxTract};

/// A reported track at one frame, with its box in the input's pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedObject {
    pub track: u64,
    pub class: ObjectClass,
    pub score: f32,
    /// Left, top, width, height in pixels of the decoded input (before any scaling).
    pub bbox: BoxPx,
    /// The box is the track's prediction: the detector did not run, or did not find it, at this
    /// frame.
    pub coasting: bool,
}

/// What the schedule decided for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// The detector ran on this frame.
    Detect,
    /// Tracks were predicted from the last detection.
    Predict,
}

/// S1–S3: whether the detector runs at media time `t`. It runs on the first frame; then every
/// `interval` while something moves or a track is alive; and every `idle_interval` over a still,
/// empty scene, so that someone standing still from the start is found too.
pub fn due(last_run: Option<f64>, t: f64, interval: f64, idle_interval: f64, active: bool) -> bool {
    match last_run {
        None => true,
        Some(last) => {
            // a microsecond of slack: frame times are rounded, and 5 frames at 25 fps are 0.2 s
            let since = t - last + 1e-6;
            since >= idle_interval || (active && since >= interval)
        }
    }
}

/// Width and colour of the analysis frames capture must deliver: colour at the detector's width
/// with detection on; grey at motion's width otherwise.
pub fn analysis_frames(cfg: &Config) -> (u32, bool) {
    if cfg.detect.enabled { (cfg.detect.width, true) } else { (cfg.motion.width, false) }
}

/// One frame's object analysis.
pub struct ObjectsFrame {
    pub schedule: Schedule,
    /// The reported tracks, in input pixels.
    pub objects: Vec<TrackedObject>,
    pub events: Vec<RuleEvent>,
    /// What the detector found, when it ran on this frame.
    pub result: Option<DetectorResult>,
}

/// Counters for health and the benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectCounters {
    pub frames: u64,
    pub detector_runs: u64,
}

pub struct ObjectStage {
    detector: Box<dyn Detector>,
    tracker: Tracker,
    rules: RuleEngine,
    interval: f64,
    idle_interval: f64,
    last_run: Option<f64>,
    /// Tracks the detector found at its last run: between runs their predicted boxes are what the
    /// rules see, and only a track the detector missed counts as coasting for them (S4).
    found_at_last_run: std::collections::HashSet<u64>,
    counters: ObjectCounters,
    /// Run at `interval` even over a still, empty scene: pictures are being redacted, and the
    /// masker needs fresh results (edge/docs/design/privacy.md, D5).
    every_interval: bool,
}

impl ObjectStage {
    /// Loads the configured model (refusing one whose checksum does not match) and builds the
    /// stage.
    pub fn load(cfg: &Config) -> anyhow::Result<ObjectStage> {
        let manifest = vakt_core::models::builtin()
            .into_iter()
            .find(|m| m.name == cfg.detect.model)
            .with_context(|| format!("`detect.model` = {:?}: no such model is built in", cfg.detect.model))?;
        let params = YoloxParams { min_score: cfg.detect.low_score as f32, ..YoloxParams::default() };
        let detector = YoloxTract::load(&cfg.models.dir, &manifest, params).with_context(|| {
            format!(
                "object detection cannot start (models.dir = {}); fix the model or set `[detect] enabled = false`",
                cfg.models.dir.display()
            )
        })?;
        tracing::info!(detector = %detector.name(), dir = %cfg.models.dir.display(), "object detector loaded");
        Ok(ObjectStage::new(cfg, Box::new(detector)))
    }

    pub fn new(cfg: &Config, detector: Box<dyn Detector>) -> ObjectStage {
        // Coasting follows the schedule: a track is reported until the detector has had a chance
        // to see it again, and kept for one more run after that (S4).
        let base = TrackerConfig::default();
        let interval = cfg.detect.interval.as_secs_f64();
        let tracker = Tracker::new(TrackerConfig {
            high_score: cfg.detect.high_score as f32,
            low_score: cfg.detect.low_score as f32,
            report_coast: base.report_coast.max(interval + 0.2),
            max_coast: base.max_coast.max(2.0 * interval + 0.5),
            ..base
        });
        ObjectStage {
            detector,
            tracker,
            rules: RuleEngine::from_config(cfg),
            interval: cfg.detect.interval.as_secs_f64(),
            idle_interval: cfg.detect.idle_interval.as_secs_f64(),
            last_run: None,
            found_at_last_run: std::collections::HashSet::new(),
            counters: ObjectCounters::default(),
            every_interval: false,
        }
    }

    /// Runs the detector at `detect.interval` whatever the scene does (for redaction).
    pub fn set_every_interval(&mut self, on: bool) {
        self.every_interval = on;
    }

    pub fn counters(&self) -> ObjectCounters {
        self.counters
    }

    /// One frame: detect or predict (S1–S4), then the rules. Returns the reported tracks in input
    /// pixels and the rule transitions.
    pub fn process(&mut self, frame: &StaticMaskedFrame, motion: &MotionResult) -> anyhow::Result<ObjectsFrame> {
        let t = frame.media_time_s();
        let (w, h) = (frame.width(), frame.height());
        self.counters.frames += 1;
        let moving = !motion.blobs.is_empty() && !motion.global_change;
        // scenery (R8) does not keep the detector at `interval`: only tracks that may be objects
        let active = moving || self.tracker.has_live_tracks(t) || self.every_interval;
        let run = frame.has_colour() && due(self.last_run, t, self.interval, self.idle_interval, active);
        // the colour conversion is paid only on the frames the detector runs on
        let mut result = None;
        let (schedule, views) = match frame.bgr().filter(|_| run) {
            Some(bgr) => {
                let detections = self.detector.detect(&BgrFrame { width: w, height: h, data: &bgr })?;
                self.last_run = Some(t);
                self.counters.detector_runs += 1;
                let views = self.tracker.update(t, &detections);
                result = Some(self.sightings(t, &detections, w as f32, h as f32));
                (Schedule::Detect, views)
            }
            None => (Schedule::Predict, self.tracker.report(t)),
        };
        if schedule == Schedule::Detect {
            self.found_at_last_run = views.iter().filter(|v| !v.coasting).map(|v| v.id).collect();
        }
        let found = &self.found_at_last_run;
        let events = self.rules.update(t, &rule_objects(&views, t, w as f32, h as f32, |id| found.contains(&id)));
        let (sw, sh) = match frame.source_size() {
            (0, _) | (_, 0) => (w, h),
            s => s,
        };
        let (fx, fy) = (sw as f32 / w as f32, sh as f32 / h as f32);
        let objects = views
            .iter()
            .map(|v| TrackedObject {
                track: v.id,
                class: v.class,
                score: v.score,
                bbox: BoxPx::new(v.bbox.x * fx, v.bbox.y * fy, v.bbox.w * fx, v.bbox.h * fy).clip(sw as f32, sh as f32),
                coasting: v.coasting,
            })
            .collect();
        Ok(ObjectsFrame { schedule, objects, events, result })
    }

    /// Every detection of a run for the masker, in shares of the frame: all of them, not only the
    /// reported tracks (a person standing still since the start is scenery to the tracker, R8,
    /// but must be masked), each with its track's velocity when the tracker matched it.
    fn sightings(&self, t: f64, detections: &[vakt_core::detect::Detection], w: f32, h: f32) -> DetectorResult {
        let assignment = self.tracker.assignment();
        let sightings = detections
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let track = assignment.get(i).copied().flatten();
                let velocity = track
                    .and_then(|id| self.tracker.tracks().iter().find(|tr| tr.id == id))
                    .map(|tr| (tr.velocity.0 / w, tr.velocity.1 / h))
                    .unwrap_or((0.0, 0.0));
                let b = d.bbox;
                Sighting { track, class: d.class, bbox: [b.x / w, b.y / h, b.w / w, b.h / h], velocity }
            })
            .collect();
        DetectorResult { t, sightings }
    }

    /// Ends every open rule event (end of stream, signal lost, shutdown) and forgets the tracks:
    /// after a gap in the picture their predictions mean nothing, and the detector runs on the
    /// next frame.
    pub fn finish(&mut self, t: f64) -> Vec<RuleEvent> {
        self.tracker.clear();
        self.last_run = None;
        self.found_at_last_run.clear();
        self.rules.finish(t)
    }
}

/// Tracks as the rules see them: boxes normalised to the frame, speeds in frame shares and in
/// the object's own heights per second. `found(id)`: the detector found the track at its last
/// run. A predicted box is `coasting` (line crossing ignores it), but `missed` only when the
/// detector missed the track at its last run: otherwise a rule that needs its condition on every
/// frame for a time (running) could never start while the detector skips frames.
fn rule_objects(views: &[TrackView], t: f64, w: f32, h: f32, found: impl Fn(u64) -> bool) -> Vec<RuleObject> {
    views
        .iter()
        .map(|v| {
            let b = v.bbox;
            let speed_px = (v.velocity.0.powi(2) + v.velocity.1.powi(2)).sqrt();
            RuleObject {
                track: v.id,
                class: v.class,
                bbox: [(b.x / w) as f64, (b.y / h) as f64, (b.w / w) as f64, (b.h / h) as f64],
                coasting: v.coasting,
                missed: v.coasting && !found(v.id),
                speed: ((v.velocity.0 / w).powi(2) + (v.velocity.1 / h).powi(2)).sqrt() as f64,
                speed_heights: if b.h > 0.0 { (speed_px / b.h) as f64 } else { 0.0 },
                age_s: t - v.first_seen,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_follows_media_time() {
        // (last run, t, active) -> due, with interval 0.2 s and idle interval 2 s
        let cases = [
            (None, 0.0, false, true),
            (Some(0.0), 0.04, true, false),
            (Some(0.0), 0.2, true, true),
            // five frames at 25 fps, rounded
            (Some(0.04), 0.24, true, true),
            (Some(0.0), 0.2, false, false),
            (Some(0.0), 1.96, false, false),
            (Some(0.0), 2.0, false, true),
            (Some(5.0), 7.5, false, true),
        ];
        for (last, t, active, want) in cases {
            assert_eq!(due(last, t, 0.2, 2.0, active), want, "last {last:?} t {t} active {active}");
        }
        // interval 0: every frame while active
        assert!(due(Some(1.0), 1.04, 0.0, 2.0, true));
    }

    #[test]
    fn rule_objects_are_normalised() {
        let v = TrackView {
            id: 7,
            class: ObjectClass::Person,
            score: 0.9,
            bbox: BoxPx::new(100.0, 50.0, 20.0, 40.0),
            coasting: false,
            velocity: (30.0, 40.0),
            first_seen: 1.0,
        };
        let o = &rule_objects(std::slice::from_ref(&v), 3.0, 200.0, 100.0, |_| false)[0];
        for (got, want) in o.bbox.iter().zip([0.5, 0.5, 0.1, 0.4]) {
            assert!((got - want).abs() < 1e-6, "{:?}", o.bbox);
        }
        assert!((o.speed_heights - 50.0 / 40.0).abs() < 1e-6);
        assert!((o.speed - (0.15f64.powi(2) + 0.4f64.powi(2)).sqrt()).abs() < 1e-6);
        assert_eq!(o.age_s, 2.0);
        assert!(!o.coasting && !o.missed);
        // a predicted box: always coasting, missed only if the detector missed it at its last run
        let predicted = TrackView { coasting: true, ..v };
        let missed = rule_objects(std::slice::from_ref(&predicted), 3.0, 200.0, 100.0, |_| false)[0];
        assert!(missed.coasting && missed.missed);
        let between = rule_objects(&[predicted], 3.0, 200.0, 100.0, |id| id == 7)[0];
        assert!(between.coasting && !between.missed);
    }
}
