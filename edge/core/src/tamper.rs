//! Tamper policy: per-check scene measurements in, lifecycle transitions per condition out.
//! Pure: no I/O, no clock. Design: `edge/docs/design/tamper.md` (invariants K1–K5).

use std::time::Duration;

use crate::event::EventKind;
use crate::lifecycle::{Lifecycle, LifecycleParams, Observation, Transition};

/// One check's measurements of the analysis frame (see `vakt_vision::tamper`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SceneMeasurement {
    /// Media time of the frame, seconds.
    pub t: f64,
    /// Share of pixels darker than the dark level.
    pub dark_fraction: f64,
    /// Share of saturated pixels.
    pub bright_fraction: f64,
    /// Sharpness relative to the reference (1.0 = as sharp as at commissioning); `None` without a
    /// reference.
    pub sharpness_ratio: Option<f64>,
    /// Similarity of the scene's structure to the reference (1.0 = identical); `None` without a
    /// reference.
    pub similarity: Option<f64>,
}

/// Thresholds, from `[tamper]` in the config. Each condition enters at one threshold and leaves
/// at another, so it neither flaps nor clears while it still holds (K2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TamperThresholds {
    pub dark_fraction: f64,
    pub bright_fraction: f64,
    pub blur_ratio: f64,
    pub scene_similarity: f64,
    pub start_after: Duration,
    pub end_after: Duration,
}

impl TamperThresholds {
    /// (enter, leave) for each condition: dark and bright enter above, blur and scene below.
    fn dark(&self) -> (f64, f64) {
        (self.dark_fraction, self.dark_fraction - 0.15)
    }
    fn bright(&self) -> (f64, f64) {
        (self.bright_fraction, self.bright_fraction - 0.2)
    }
    fn blur(&self) -> (f64, f64) {
        (self.blur_ratio, (self.blur_ratio * 1.6).min(0.95))
    }
    fn scene(&self) -> (f64, f64) {
        (self.scene_similarity, (self.scene_similarity + 0.15).min(0.95))
    }
}

/// A condition with hysteresis: raised when the value passes `enter`, lowered only when it is
/// back beyond `leave`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Hysteresis {
    pub raised: bool,
}

impl Hysteresis {
    /// `above`: the condition is a high value (dark, bright) rather than a low one (blur, scene).
    pub fn step(&mut self, value: f64, (enter, leave): (f64, f64), above: bool) -> bool {
        let past = |thr: f64| if above { value >= thr } else { value <= thr };
        self.raised = if self.raised { !past_leave(value, leave, above) } else { past(enter) };
        self.raised
    }
}

fn past_leave(value: f64, leave: f64, above: bool) -> bool {
    if above { value < leave } else { value > leave }
}

/// A condition judged against the reference (blur, scene; low values are the condition): stepped
/// when the picture can be judged, frozen while it is covered, reset without a reference (K3, K4).
fn judge(h: &mut Hysteresis, value: Option<f64>, thresholds: (f64, f64), covered: bool) -> bool {
    match value {
        Some(v) if !covered => h.step(v, thresholds, false),
        Some(_) => h.raised,
        None => {
            *h = Hysteresis::default();
            false
        }
    }
}

/// The video-based tamper conditions, in precedence order.
pub const VIDEO_CONDITIONS: [EventKind; 4] =
    [EventKind::TooDark, EventKind::TooBright, EventKind::TooBlurry, EventKind::SceneChanged];

/// A condition's transition with the measurement that drove it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TamperTransition {
    pub kind: EventKind,
    pub transition: Transition,
    /// Dark or saturated share of the frame, sharpness ratio, or structure similarity.
    pub value: f64,
}

/// Per-condition hysteresis and lifecycle.
#[derive(Debug, Clone)]
pub struct TamperPolicy {
    th: TamperThresholds,
    raw: [Hysteresis; 4],
    lifecycles: [Lifecycle; 4],
}

impl TamperPolicy {
    pub fn new(th: TamperThresholds) -> Self {
        let params = LifecycleParams {
            start_after: th.start_after,
            // tamper conditions are states: one update a minute at most while they last
            update_interval: Duration::from_secs(60),
            end_after: th.end_after,
        };
        TamperPolicy {
            th,
            raw: [Hysteresis::default(); 4],
            lifecycles: std::array::from_fn(|_| Lifecycle::new(params)),
        }
    }

    /// Feeds one check; returns the transitions it causes, by condition.
    pub fn observe(&mut self, m: SceneMeasurement) -> Vec<TamperTransition> {
        let dark = self.raw[0].step(m.dark_fraction, self.th.dark(), true);
        let bright = self.raw[1].step(m.bright_fraction, self.th.bright(), true);
        // K3: a dark or saturated picture explains lost sharpness and structure; only the cause
        // is reported. Without a reference there is nothing to compare with (K4).
        let covered = dark || bright;
        // While it is covered or saturated, blur and scene keep the state they had (frozen, not
        // reset): a flash must neither end a turned-camera alarm nor raise a new one.
        let blurry = judge(&mut self.raw[2], m.sharpness_ratio, self.th.blur(), covered);
        let moved = judge(&mut self.raw[3], m.similarity, self.th.scene(), covered);
        let values =
            [m.dark_fraction, m.bright_fraction, m.sharpness_ratio.unwrap_or(1.0), m.similarity.unwrap_or(1.0)];
        let mut out = Vec::new();
        for (i, active) in [dark, bright, blurry, moved].into_iter().enumerate() {
            let obs = Observation { t: m.t, active, bbox: None, area: if active { 1.0 } else { 0.0 } };
            if let Some(transition) = self.lifecycles[i].observe(obs) {
                out.push(TamperTransition { kind: VIDEO_CONDITIONS[i], transition, value: values[i] });
            }
        }
        out
    }

    /// Conditions whose event is open (started and not ended).
    pub fn active(&self) -> Vec<EventKind> {
        VIDEO_CONDITIONS.iter().zip(&self.lifecycles).filter(|(_, l)| l.is_active()).map(|(k, _)| *k).collect()
    }

    /// Ends every open condition (shutdown, end of stream, signal lost).
    pub fn finish(&mut self, t: f64) -> Vec<TamperTransition> {
        self.raw = [Hysteresis::default(); 4];
        let mut out = Vec::new();
        for (i, l) in self.lifecycles.iter_mut().enumerate() {
            if let Some(transition) = l.finish(t) {
                out.push(TamperTransition { kind: VIDEO_CONDITIONS[i], transition, value: f64::NAN });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::TransitionPhase::{End, Start};

    fn th() -> TamperThresholds {
        TamperThresholds {
            dark_fraction: 0.85,
            bright_fraction: 0.6,
            blur_ratio: 0.35,
            scene_similarity: 0.45,
            start_after: Duration::from_secs(2),
            end_after: Duration::from_secs(2),
        }
    }

    fn normal(t: f64) -> SceneMeasurement {
        SceneMeasurement {
            t,
            dark_fraction: 0.05,
            bright_fraction: 0.01,
            sharpness_ratio: Some(1.0),
            similarity: Some(0.9),
        }
    }

    /// Runs 0.5 s checks from 0 to 30 s; `f` changes the normal measurement; returns
    /// (kind, phase, t) of every transition.
    fn run(f: impl Fn(f64, SceneMeasurement) -> SceneMeasurement) -> Vec<(EventKind, bool, f64)> {
        let mut p = TamperPolicy::new(th());
        (0..60)
            .flat_map(|i| {
                let t = i as f64 * 0.5;
                p.observe(f(t, normal(t)))
            })
            .map(|tt| (tt.kind, tt.transition.phase == Start, tt.transition.at))
            .collect()
    }

    #[test]
    fn table() {
        use EventKind::*;
        type Case = (&'static str, Box<dyn Fn(f64, SceneMeasurement) -> SceneMeasurement>, Vec<(EventKind, bool, f64)>);
        let cases: Vec<Case> = vec![
            ("an untouched scene raises nothing", Box::new(|_, m| m), vec![]),
            (
                "covered from 10 s to 20 s: too_dark only, 2 s after onset, ends 2 s after the last covered check",
                Box::new(|t, m| {
                    if (10.0..20.0).contains(&t) {
                        SceneMeasurement {
                            dark_fraction: 0.97,
                            sharpness_ratio: Some(0.05),
                            similarity: Some(0.1),
                            ..m
                        }
                    } else {
                        m
                    }
                }),
                vec![(TooDark, true, 12.0), (TooDark, false, 21.5)],
            ),
            (
                "blinded from 10 s to 20 s",
                Box::new(
                    |t, m| if (10.0..20.0).contains(&t) { SceneMeasurement { bright_fraction: 0.9, ..m } } else { m },
                ),
                vec![(TooBright, true, 12.0), (TooBright, false, 21.5)],
            ),
            (
                "defocused: sharpness at 20 % of the reference",
                Box::new(|t, m| {
                    if (10.0..20.0).contains(&t) { SceneMeasurement { sharpness_ratio: Some(0.2), ..m } } else { m }
                }),
                vec![(TooBlurry, true, 12.0), (TooBlurry, false, 21.5)],
            ),
            (
                "turned: structure no longer matches",
                Box::new(|t, m| if t >= 10.0 { SceneMeasurement { similarity: Some(0.2), ..m } } else { m }),
                vec![(SceneChanged, true, 12.0)],
            ),
            (
                "hysteresis: a value hovering between enter and leave keeps the condition",
                Box::new(|t, m| {
                    let d = if t < 10.0 {
                        0.05
                    } else if t < 12.0 {
                        0.9
                    } else if t < 20.0 {
                        if (t * 2.0) as i64 % 2 == 0 { 0.8 } else { 0.75 }
                    } else {
                        0.05
                    };
                    SceneMeasurement { dark_fraction: d, ..m }
                }),
                vec![(TooDark, true, 12.0), (TooDark, false, 21.5)],
            ),
            (
                "a blip shorter than start_after raises nothing",
                Box::new(
                    |t, m| if (10.0..11.0).contains(&t) { SceneMeasurement { dark_fraction: 0.99, ..m } } else { m },
                ),
                vec![],
            ),
            (
                "a flash on a turned camera neither ends nor restarts scene_changed",
                Box::new(|t, m| {
                    let m = if t >= 10.0 { SceneMeasurement { similarity: Some(0.2), ..m } } else { m };
                    if (16.0..18.5).contains(&t) {
                        SceneMeasurement { bright_fraction: 0.9, similarity: Some(0.05), ..m }
                    } else {
                        m
                    }
                }),
                vec![(SceneChanged, true, 12.0), (TooBright, true, 18.0), (TooBright, false, 20.0)],
            ),
            (
                "without a reference only dark and bright are judged",
                Box::new(|_, m| SceneMeasurement { sharpness_ratio: None, similarity: None, ..m }),
                vec![],
            ),
        ];
        for (what, f, want) in cases {
            assert_eq!(run(f), want, "{what}");
        }
    }

    #[test]
    fn active_and_finish() {
        let mut p = TamperPolicy::new(th());
        for i in 0..10 {
            p.observe(SceneMeasurement { dark_fraction: 0.99, ..normal(i as f64) });
        }
        assert_eq!(p.active(), vec![EventKind::TooDark]);
        let ends = p.finish(10.0);
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0].transition.phase, End);
        assert!(p.active().is_empty());
    }
}
