//! Object analysis for one camera: the detector on its media-time schedule, the tracker, and the
//! rules (presence, line crossing, loitering, crowding, running). Design:
//! `edge/docs/design/analytics.md` (schedule S1–S4) and `edge/docs/design/rules.md`.

use anyhow::Context;

use vakt_core::config::Config;
use vakt_core::detect::{BoxPx, ObjectClass};
use vakt_core::event::EventKind;
use vakt_core::lifecycle::Transition;
use vakt_core::redaction::{DetectorResult, Sighting};
use vakt_core::rules::{RuleEngine, RuleEvent, RuleObject};
use vakt_core::track::{TrackView, Tracker, TrackerConfig};
use vakt_media::StaticMaskedFrame;
use vakt_vision::{BgrFrame, Detector, FaceParams, MotionResult, UltraFace, YoloxParams, YoloxTract};

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
    /// Runs that failed (the live box only: offline, a failure ends the run).
    pub detector_failures: u64,
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
    /// Runs with the object detector when pictures are redacted and `[redact] faces` is on (D9).
    faces: Option<UltraFace>,
    /// On the live box: the detector's health (D10). `None` in offline replay, where a detector
    /// error ends the run and wall time means nothing.
    health: Option<DetectorHealth>,
}

/// How many runs in a row within the bound end a `detector_stalled` alarm.
pub const RECOVERY_RUNS: u32 = 5;

/// D10: the detector's health on the live box. A run that fails, or takes longer than the
/// masker's `max_staleness` (wall time), opens the alarm `detector_stalled`: the masker could not
/// have had a fresh result, so every picture leaving the box would be masked whole. It ends after
/// `RECOVERY_RUNS` good runs in a row.
#[derive(Debug, Clone)]
pub struct DetectorHealth {
    slow_after: f64,
    /// Onset media time, serial and reason of the open alarm.
    open: Option<(f64, u64, &'static str)>,
    serial: u64,
    good_runs: u32,
    failures: u64,
}

/// What one detector run did, for [`DetectorHealth`].
#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// Finished, taking this many seconds of wall time.
    Done(f64),
    /// Failed with this error.
    Failed(String),
}

impl DetectorHealth {
    pub fn new(slow_after: std::time::Duration) -> DetectorHealth {
        DetectorHealth { slow_after: slow_after.as_secs_f64(), open: None, serial: 0, good_runs: 0, failures: 0 }
    }

    pub fn is_stalled(&self) -> bool {
        self.open.is_some()
    }

    /// Detector runs that failed since the start.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Folds in a run at media time `t`; returns the alarm's start or end when it changes.
    pub fn observe(&mut self, t: f64, outcome: &RunOutcome) -> Option<RuleEvent> {
        let bad = match outcome {
            RunOutcome::Done(s) if *s > self.slow_after => Some(("slow", format!("a run took {:.0} ms", s * 1000.0))),
            RunOutcome::Done(_) => None,
            RunOutcome::Failed(e) => {
                self.failures += 1;
                Some(("error", e.clone()))
            }
        };
        match (bad, self.open) {
            (Some((reason, detail)), None) => {
                self.good_runs = 0;
                let serial = self.serial;
                self.serial += 1;
                self.open = Some((t, serial, reason));
                let mut attrs = serde_json::Map::new();
                attrs.insert("reason".into(), reason.into());
                attrs.insert("detail".into(), detail.into());
                if let RunOutcome::Done(s) = outcome {
                    attrs.insert("run_ms".into(), ((s * 1000.0).round()).into());
                }
                attrs.insert("max_staleness_ms".into(), ((self.slow_after * 1000.0).round()).into());
                Some(RuleEvent {
                    kind: EventKind::DetectorStalled,
                    zone: None,
                    subject: None,
                    transition: Transition::whole_view_start(t, serial),
                    attrs,
                })
            }
            (Some(_), Some(_)) => {
                self.good_runs = 0;
                None
            }
            (None, Some(_)) => {
                self.good_runs += 1;
                if self.good_runs >= RECOVERY_RUNS { self.end(t) } else { None }
            }
            (None, None) => None,
        }
    }

    /// Ends an open alarm at media time `t` (recovery, signal lost, shutdown).
    pub fn end(&mut self, t: f64) -> Option<RuleEvent> {
        let (onset, serial, reason) = self.open.take()?;
        self.good_runs = 0;
        let mut attrs = serde_json::Map::new();
        attrs.insert("reason".into(), reason.into());
        Some(RuleEvent {
            kind: EventKind::DetectorStalled,
            zone: None,
            subject: None,
            transition: Transition::whole_view_end(onset, t, serial),
            attrs,
        })
    }
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
            faces: None,
            health: None,
        }
    }

    /// The live box: a detector error no longer ends the run but opens `detector_stalled`, as
    /// does a run slower than `[redact] max_staleness` (D10).
    pub fn watch_health(&mut self, cfg: &Config) {
        self.health = Some(DetectorHealth::new(cfg.redact.max_staleness));
    }

    /// Whether `detector_stalled` is open.
    pub fn stalled(&self) -> bool {
        self.health.as_ref().is_some_and(DetectorHealth::is_stalled)
    }

    /// Fault injection (tests): every run sleeps `delay` first, and runs after the first
    /// `fail_after` fail.
    pub fn inject_faults(&mut self, delay: std::time::Duration, fail_after: Option<u64>) {
        let inner = std::mem::replace(&mut self.detector, Box::new(NoDetector));
        self.detector = Box::new(FaultyDetector { inner, delay, fail_after, runs: 0 });
    }

    /// Prepares the stage for redaction: the detector runs at `detect.interval` whatever the
    /// scene does (D5), and the face detector with it when `[redact] faces` is on (D9; refused,
    /// naming the model directory, when its model is missing or damaged).
    pub fn prepare_for_redaction(&mut self, cfg: &Config) -> anyhow::Result<()> {
        self.every_interval = true;
        if cfg.redact.faces && self.faces.is_none() {
            let manifest = vakt_core::models::builtin()
                .into_iter()
                .find(|m| m.name == "ultraface")
                .context("the face model's manifest is not built in")?;
            let faces = UltraFace::load(&cfg.models.dir, &manifest, FaceParams::default()).with_context(|| {
                format!(
                    "face masking cannot start (models.dir = {}); fix the model or set `[redact] faces = false`",
                    cfg.models.dir.display()
                )
            })?;
            tracing::info!(detector = %faces.name(), "face detector loaded for masking");
            self.faces = Some(faces);
        }
        Ok(())
    }

    pub fn counters(&self) -> ObjectCounters {
        ObjectCounters { detector_failures: self.health.as_ref().map_or(0, DetectorHealth::failures), ..self.counters }
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
        let mut health_events = Vec::new();
        let (schedule, views) = match frame.bgr().filter(|_| run) {
            Some(bgr) => {
                let frame = BgrFrame { width: w, height: h, data: &bgr };
                let started = std::time::Instant::now();
                let found = self.detector.detect(&frame).and_then(|d| {
                    let faces = match &mut self.faces {
                        Some(f) => f.detect(&frame)?,
                        None => Vec::new(),
                    };
                    Ok((d, faces))
                });
                self.last_run = Some(t);
                let outcome = match &found {
                    Ok(_) => RunOutcome::Done(started.elapsed().as_secs_f64()),
                    Err(e) => RunOutcome::Failed(e.to_string()),
                };
                if let Some(h) = &mut self.health {
                    health_events.extend(h.observe(t, &outcome));
                }
                match (&self.health, found) {
                    (_, Ok((detections, faces))) => {
                        self.counters.detector_runs += 1;
                        let views = self.tracker.update(t, &detections);
                        result = Some(self.sightings(t, &detections, &faces, w as f32, h as f32));
                        (Schedule::Detect, views)
                    }
                    // the live box goes on with motion and tamper, and says so (D10); the
                    // masker gets no result, so pictures go out masked whole (D5)
                    (Some(_), Err(e)) => {
                        // logged once, when this failure opened the alarm
                        if !health_events.is_empty() {
                            tracing::error!(
                                "the object detector failed: {e}; people are masked whole-frame until it recovers"
                            );
                        }
                        (Schedule::Predict, self.tracker.report(t))
                    }
                    (None, Err(e)) => return Err(e.into()),
                }
            }
            None => (Schedule::Predict, self.tracker.report(t)),
        };
        if schedule == Schedule::Detect {
            self.found_at_last_run = views.iter().filter(|v| !v.coasting).map(|v| v.id).collect();
        }
        let found = &self.found_at_last_run;
        let mut events = self.rules.update(t, &rule_objects(&views, t, w as f32, h as f32, |id| found.contains(&id)));
        events.extend(health_events);
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
    /// but must be masked), each with its track's velocity when the tracker matched it. Faces
    /// (D9) follow the person box that holds their centre, the smallest if several do.
    fn sightings(
        &self,
        t: f64,
        detections: &[vakt_core::detect::Detection],
        faces: &[vakt_core::detect::Detection],
        w: f32,
        h: f32,
    ) -> DetectorResult {
        let assignment = self.tracker.assignment();
        let velocity = |track: Option<u64>| {
            track
                .and_then(|id| self.tracker.tracks().iter().find(|tr| tr.id == id))
                .map(|tr| (tr.velocity.0 / w, tr.velocity.1 / h))
                .unwrap_or((0.0, 0.0))
        };
        let norm = |b: &BoxPx| [b.x / w, b.y / h, b.w / w, b.h / h];
        let mut sightings: Vec<Sighting> = detections
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let track = assignment.get(i).copied().flatten();
                Sighting::object(track, d.class, norm(&d.bbox), velocity(track))
            })
            .collect();
        for f in faces {
            let holder = face_holder(&f.bbox, detections).and_then(|i| assignment.get(i).copied().flatten());
            sightings.push(Sighting::face(holder, norm(&f.bbox), velocity(holder)));
        }
        DetectorResult { t, sightings }
    }

    /// Ends every open rule event (end of stream, signal lost, shutdown) and forgets the tracks:
    /// after a gap in the picture their predictions mean nothing, and the detector runs on the
    /// next frame.
    pub fn finish(&mut self, t: f64) -> Vec<RuleEvent> {
        self.tracker.clear();
        self.last_run = None;
        self.found_at_last_run.clear();
        let mut events = self.rules.finish(t);
        events.extend(self.health.as_mut().and_then(|h| h.end(t)));
        events
    }
}

/// D9: the detection whose person box holds the face's centre, the smallest if several do.
fn face_holder(face: &BoxPx, detections: &[vakt_core::detect::Detection]) -> Option<usize> {
    let (cx, cy) = face.centre();
    detections
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            d.class == ObjectClass::Person
                && (d.bbox.x..=d.bbox.right()).contains(&cx)
                && (d.bbox.y..=d.bbox.bottom()).contains(&cy)
        })
        .min_by(|a, b| a.1.bbox.area().total_cmp(&b.1.bbox.area()))
        .map(|(i, _)| i)
}

/// Stands in while the real detector is moved into a wrapper.
struct NoDetector;

impl Detector for NoDetector {
    fn detect(&mut self, _: &BgrFrame<'_>) -> Result<Vec<vakt_core::detect::Detection>, vakt_vision::VisionError> {
        Ok(Vec::new())
    }
    fn name(&self) -> String {
        "none".into()
    }
}

/// Fault injection: a slow or failing detector around the real one.
struct FaultyDetector {
    inner: Box<dyn Detector>,
    delay: std::time::Duration,
    fail_after: Option<u64>,
    runs: u64,
}

impl Detector for FaultyDetector {
    fn detect(&mut self, frame: &BgrFrame<'_>) -> Result<Vec<vakt_core::detect::Detection>, vakt_vision::VisionError> {
        self.runs += 1;
        std::thread::sleep(self.delay);
        if self.fail_after.is_some_and(|n| self.runs > n) {
            return Err(vakt_vision::VisionError::Model("fault injection: the detector fails".into()));
        }
        self.inner.detect(frame)
    }
    fn name(&self) -> String {
        format!("{} (faults injected)", self.inner.name())
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
    use vakt_core::lifecycle::TransitionPhase;

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
    fn a_failed_or_slow_run_opens_detector_stalled_and_good_runs_end_it() {
        let mut h = DetectorHealth::new(std::time::Duration::from_millis(500));
        assert!(h.observe(0.0, &RunOutcome::Done(0.1)).is_none());
        let start = h.observe(0.2, &RunOutcome::Done(0.8)).expect("a slow run opens the alarm");
        assert_eq!((start.kind, start.transition.phase), (EventKind::DetectorStalled, TransitionPhase::Start));
        assert_eq!(start.attrs["reason"], "slow");
        assert_eq!(start.attrs["run_ms"], 800.0);
        assert!(h.is_stalled());
        // an error while open changes nothing but restarts the count of good runs
        for i in 0..RECOVERY_RUNS - 1 {
            assert!(h.observe(1.0 + i as f64, &RunOutcome::Done(0.1)).is_none());
        }
        assert!(h.observe(5.0, &RunOutcome::Failed("boom".into())).is_none());
        for i in 0..RECOVERY_RUNS - 1 {
            assert!(h.observe(6.0 + i as f64, &RunOutcome::Done(0.1)).is_none());
        }
        let end = h.observe(20.0, &RunOutcome::Done(0.1)).expect("five good runs in a row end it");
        assert_eq!((end.transition.phase, end.transition.onset, end.transition.serial), (TransitionPhase::End, 0.2, 0));
        assert!(!h.is_stalled());
        // a failure opens a new one, with the error; shutdown ends it
        let again = h.observe(21.0, &RunOutcome::Failed("model gone".into())).unwrap();
        assert_eq!(
            (again.attrs["reason"].as_str(), again.attrs["detail"].as_str()),
            (Some("error"), Some("model gone"))
        );
        assert_eq!(again.transition.serial, 1);
        assert_eq!(h.end(22.0).unwrap().transition.phase, TransitionPhase::End);
        assert!(h.end(23.0).is_none());
        assert_eq!(h.failures(), 2);
    }

    #[test]
    fn a_face_belongs_to_the_smallest_person_box_holding_its_centre() {
        use vakt_core::detect::Detection;
        let person = |x, y, w, h| Detection { class: ObjectClass::Person, score: 0.9, bbox: BoxPx::new(x, y, w, h) };
        let dets = [
            person(0.0, 0.0, 100.0, 100.0),
            person(40.0, 10.0, 20.0, 60.0),
            Detection { class: ObjectClass::Car, score: 0.9, bbox: BoxPx::new(45.0, 15.0, 5.0, 5.0) },
        ];
        // inside both people (not the car): the smaller one
        assert_eq!(face_holder(&BoxPx::new(45.0, 12.0, 8.0, 8.0), &dets), Some(1));
        // inside the large one only
        assert_eq!(face_holder(&BoxPx::new(5.0, 5.0, 8.0, 8.0), &dets), Some(0));
        // on nobody
        assert_eq!(face_holder(&BoxPx::new(200.0, 5.0, 8.0, 8.0), &dets), None);
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
