//! The redaction stage: pairs each full-resolution static-masked frame with the mask plan of the
//! same frame (made when analysis saw it) and turns the pair into a `RedactedFrame`, the only
//! picture an egress accepts. `vakt redact` uses it strictly (both branches deliver every
//! frame); the live view uses it live, where either branch may drop frames under load.
//! Design: `edge/docs/design/privacy.md` (D6, D11).

use std::collections::BTreeMap;

use vakt_core::config::Config;
use vakt_core::redaction::{DetectorResult, MaskPlan, MaskPlanner, MotionInput};
use vakt_media::{RedactedFrame, Redactor, StaticMaskedFrame};

/// How the stage treats a frame one branch never delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    /// Offline: every frame reaches both branches; anything else is an error.
    Strict,
    /// Live (D11): a full frame whose analysis was dropped is planned from the newest results
    /// and the newest motion; an analysed frame whose full frame was dropped is forgotten; at
    /// most `LIVE_PENDING` full frames wait for their plan, then the oldest goes out planned the
    /// same way. Nothing waits for the detector (D6).
    Live,
}

/// Full frames that may wait for their plan in live pairing (about 160 ms at 25 fps).
pub const LIVE_PENDING: usize = 4;

pub struct RedactionStage {
    planner: MaskPlanner,
    redactor: Redactor,
    pairing: Pairing,
    plans: BTreeMap<u64, MaskPlan>,
    fulls: BTreeMap<u64, StaticMaskedFrame>,
    /// The motion of the newest analysed frame, for frames planned without their own.
    last_motion: MotionInput,
    /// Full frames planned without their own analysis (live pairing).
    substituted: u64,
}

/// A redacted frame with the plan it was painted from.
pub struct Redacted {
    pub plan: MaskPlan,
    pub frame: RedactedFrame,
}

impl RedactionStage {
    /// `keep_track`: subject access, that track stays visible (D7).
    pub fn new(cfg: &Config, keep_track: Option<u64>, pairing: Pairing) -> RedactionStage {
        RedactionStage {
            planner: MaskPlanner::new(cfg.redact.params(keep_track)),
            redactor: Redactor::new(cfg.redact.mode, cfg.privacy.polygons()),
            pairing,
            plans: BTreeMap::new(),
            fulls: BTreeMap::new(),
            last_motion: MotionInput::default(),
            substituted: 0,
        }
    }

    /// A detector result has reached the masker.
    pub fn add_result(&mut self, r: &DetectorResult) {
        self.planner.add_result(r);
    }

    /// Analysis has seen frame `index` at media time `t` with this motion: its plan is made now,
    /// from the results that have arrived (D6).
    pub fn analysed(&mut self, index: u64, t: f64, motion: MotionInput) -> anyhow::Result<Vec<Redacted>> {
        self.plans.insert(index, self.planner.plan(t, &motion));
        self.last_motion = motion;
        self.drain()
    }

    /// The full-resolution frame `index` has arrived.
    pub fn full(&mut self, frame: StaticMaskedFrame) -> anyhow::Result<Vec<Redacted>> {
        self.fulls.insert(frame.index(), frame);
        self.drain()
    }

    /// Frames planned without their own analysis (live pairing; the live view reports it).
    #[cfg(test)]
    pub fn substituted(&self) -> u64 {
        self.substituted
    }

    /// End of stream. Strict: an error if a frame was left without its pair. Live: the waiting
    /// full frames go out, planned from the newest results.
    pub fn finish(&mut self) -> anyhow::Result<Vec<Redacted>> {
        match self.pairing {
            Pairing::Strict if !self.plans.is_empty() || !self.fulls.is_empty() => anyhow::bail!(
                "internal error: {} analysed and {} full frames were left without their pair",
                self.plans.len(),
                self.fulls.len()
            ),
            Pairing::Strict => Ok(Vec::new()),
            Pairing::Live => {
                self.plans.clear();
                let mut out = Vec::new();
                while let Some((_, f)) = self.fulls.pop_first() {
                    out.push(self.substitute(f));
                }
                Ok(out)
            }
        }
    }

    fn substitute(&mut self, full: StaticMaskedFrame) -> Redacted {
        self.substituted += 1;
        let plan = self.planner.plan(full.media_time_s(), &self.last_motion);
        self.paint(full, plan)
    }

    fn paint(&mut self, full: StaticMaskedFrame, plan: MaskPlan) -> Redacted {
        let frame = self.redactor.redact(full, &plan);
        Redacted { plan, frame }
    }

    fn drain(&mut self) -> anyhow::Result<Vec<Redacted>> {
        let mut out = Vec::new();
        while let (Some(&pi), Some(&fi)) = (self.plans.keys().next(), self.fulls.keys().next()) {
            if pi == fi {
                let plan = self.plans.pop_first().expect("checked above").1;
                let full = self.fulls.pop_first().expect("checked above").1;
                out.push(self.paint(full, plan));
                continue;
            }
            if self.pairing == Pairing::Strict {
                anyhow::bail!("internal error: frame {pi} of one branch met frame {fi} of the other");
            }
            if pi < fi {
                // the full branch dropped frame pi: its plan has nothing to paint
                self.plans.pop_first();
            } else {
                // analysis dropped frame fi (plans come in order, so it will not come)
                let full = self.fulls.pop_first().expect("checked above").1;
                out.push(self.substitute(full));
            }
        }
        if self.pairing == Pairing::Live {
            while self.fulls.len() > LIVE_PENDING {
                let full = self.fulls.pop_first().expect("longer than LIVE_PENDING").1;
                out.push(self.substitute(full));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    use vakt_core::detect::ObjectClass;
    use vakt_core::redaction::{FullReason, Sighting};
    use vakt_media::{Capture, CaptureConfig, CaptureMsg, Pacing, Recovery};

    /// Live pairing on a real live pipeline (GStreamer's test ball at 25 fps) with an analysis
    /// slow enough that the capture drops frames on both branches: every full frame that
    /// arrives goes out exactly once, in order, with the person the detector reported masked and
    /// never the whole frame once a result has arrived; some went out planned without their own analysis.
    #[test]
    fn live_pairing_redacts_every_full_frame_once_when_branches_drop_frames() {
        let cfg = vakt_core::config::parse(
            "[box]\nid = \"b1\"\nsite = \"s\"\n[source]\nuri = \"test://ball\"\n[mqtt]\nurl = \"mqtt://h:1\"\ninsecure_plaintext = true\n\
             [storage]\nrecord = false\n[redact]\nmax_staleness = \"2s\"\n",
            std::path::Path::new("/"),
        )
        .unwrap();
        let mut capture = Capture::start(CaptureConfig {
            source: cfg.source.spec.clone(),
            privacy: cfg.privacy.polygons(),
            analysis_width: 160,
            colour: false,
            full_frames: true,
            pacing: Pacing::Live,
            recovery: Recovery::Stop,
            loop_stored: false,
            stall_timeout: Duration::from_secs(5),
            queue: 2,
            camera_element: cfg.hardware.profile.gstreamer.camera_source.clone(),
        })
        .unwrap();
        let mut stage = RedactionStage::new(&cfg, None, Pairing::Live);
        let person = [0.1f32, 0.1, 0.2, 0.3];
        let (mut fulls, mut analysed, mut out) = (0u64, 0u64, Vec::new());
        // 3 s at least; on a loaded machine up to 10 s, until a full frame went out without its
        // own analysis (what this test is about)
        let (until, hard) = (Instant::now() + Duration::from_secs(3), Instant::now() + Duration::from_secs(10));
        let rx = capture.receiver().clone();
        while Instant::now() < until || (stage.substituted() == 0 && Instant::now() < hard) {
            match rx.recv_timeout(Duration::from_secs(5)).unwrap() {
                CaptureMsg::Frame(f) => {
                    analysed += 1;
                    let sighting = Sighting::object(Some(1), ObjectClass::Person, person, (0.0, 0.0));
                    stage.add_result(&DetectorResult { t: f.media_time_s(), sightings: vec![sighting] });
                    out.extend(stage.analysed(f.index(), f.media_time_s(), MotionInput::default()).unwrap());
                    // an analysis slower than the camera: the capture must drop frames
                    std::thread::sleep(Duration::from_millis(90));
                }
                CaptureMsg::Full(f) => {
                    fulls += 1;
                    out.extend(stage.full(f).unwrap());
                }
                CaptureMsg::Failed(e) => panic!("{e}"),
                _ => {}
            }
        }
        capture.stop();
        out.extend(stage.finish().unwrap());
        let dropped = capture.counters().frames_dropped.load(std::sync::atomic::Ordering::Relaxed);
        assert!(dropped > 0 && analysed > 3, "the test needs drops: {dropped} dropped, {analysed} analysed");
        assert_eq!(out.len() as u64, fulls, "every full frame goes out once");
        assert!(out.windows(2).all(|w| w[0].frame.index() < w[1].frame.index()), "in order, no repeats");
        assert!(stage.substituted() > 0, "no full frame lacked its analysis: the live path was not exercised");
        // frames before the first result are masked whole (fail closed, D5); none after
        let first = out.iter().position(|r| !r.plan.is_full()).expect("some frame was planned from a result");
        assert!(out[..first].iter().all(|r| r.plan == MaskPlan::Full(FullReason::NoResult) && r.frame.fully_masked()));
        for r in &out[first..] {
            let (w, h) = (r.frame.width(), r.frame.height());
            assert!(!r.frame.fully_masked(), "frame {} masked whole: {:?}", r.frame.index(), r.plan);
            let (x0, y0, x1, y1) = vakt_core::redaction::pixel_bounds(&person, w, h).unwrap();
            for y in y0..y1 {
                let row = &r.frame.mask()[(y * w) as usize..((y + 1) * w) as usize];
                assert!(
                    row[x0 as usize..x1 as usize].iter().all(|&m| m != 0),
                    "frame {}: person visible",
                    r.frame.index()
                );
            }
        }
    }
}
