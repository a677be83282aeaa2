//! The event lifecycle policy: per-frame observations in, `start` / `update` / `end` transitions
//! out. Pure: no clock, no I/O; time is whatever the caller passes (media time in seconds).
//! Design: `edge/docs/design/events.md` (invariants L1–L5).

use std::time::Duration;

use crate::geometry::BBox;

/// Media times are f64 seconds; comparisons tolerate a nanosecond of rounding.
const EPS: f64 = 1e-9;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LifecycleParams {
    /// The condition must hold this long before `start` (L1).
    pub start_after: Duration,
    /// At most one `update` per interval while active (L3).
    pub update_interval: Duration,
    /// `end` once the condition has been absent this long (L4).
    pub end_after: Duration,
}

/// What the detector saw in one frame for one key (zone).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Media time of the frame, seconds.
    pub t: f64,
    pub active: bool,
    pub bbox: Option<BBox>,
    pub area: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionPhase {
    Start,
    Update,
    End,
    /// A momentary event (a line crossing): never produced by `Lifecycle`.
    Instant,
}

/// A lifecycle transition to publish.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub phase: TransitionPhase,
    /// Media time where the condition began.
    pub onset: f64,
    /// Media time of the last frame with the condition (for `end`: where it stopped).
    pub last_active: f64,
    /// Media time of the frame that triggered this transition.
    pub at: f64,
    /// Box of the frame that triggered it (for `end`: the last box seen).
    pub bbox: Option<BBox>,
    /// Largest area seen since the start (for `end`), or the current area.
    pub area: f64,
    /// Number of the event within this key, from 0; a new event starts at every `start`.
    pub serial: u64,
}

impl Transition {
    /// The start of a condition of the whole view (no box), at media time `t`.
    pub fn whole_view_start(t: f64, serial: u64) -> Transition {
        Transition { phase: TransitionPhase::Start, onset: t, last_active: t, at: t, bbox: None, area: 0.0, serial }
    }

    /// The end at media time `t` of a whole-view condition that began at `onset`.
    pub fn whole_view_end(onset: f64, t: f64, serial: u64) -> Transition {
        Transition {
            phase: TransitionPhase::End,
            onset,
            last_active: t,
            at: t.max(onset),
            bbox: None,
            area: 0.0,
            serial,
        }
    }

    /// A momentary whole-view event at media time `t` (one `instant` message).
    pub fn instant(t: f64, serial: u64) -> Transition {
        Transition { phase: TransitionPhase::Instant, onset: t, last_active: t, at: t, bbox: None, area: 0.0, serial }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Idle,
    Pending { onset: f64 },
    Active { onset: f64, last_active: f64, last_emit: f64, bbox: Option<BBox>, peak: f64 },
}

/// One key's lifecycle state machine.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    params: LifecycleParams,
    state: State,
    serial: u64,
}

impl Lifecycle {
    pub fn new(params: LifecycleParams) -> Self {
        Lifecycle { params, state: State::Idle, serial: 0 }
    }

    pub fn is_active(&self) -> bool {
        matches!(self.state, State::Active { .. })
    }

    /// Feeds one frame's observation; returns at most one transition.
    pub fn observe(&mut self, o: Observation) -> Option<Transition> {
        let p = self.params;
        let secs = |d: Duration| d.as_secs_f64();
        match self.state.clone() {
            State::Idle | State::Pending { .. } if !o.active => {
                self.state = State::Idle;
                None
            }
            State::Idle => {
                self.state = State::Pending { onset: o.t };
                self.try_start(o)
            }
            State::Pending { .. } => self.try_start(o),
            State::Active { onset, last_active, last_emit, bbox, peak } => {
                if o.active {
                    let peak = peak.max(o.area);
                    let due = o.t - last_emit + EPS >= secs(p.update_interval);
                    let last_emit = if due { o.t } else { last_emit };
                    self.state = State::Active { onset, last_active: o.t, last_emit, bbox: o.bbox, peak };
                    due.then_some(Transition {
                        phase: TransitionPhase::Update,
                        onset,
                        last_active: o.t,
                        at: o.t,
                        bbox: o.bbox,
                        area: o.area,
                        serial: self.serial,
                    })
                } else if o.t - last_active + EPS >= secs(p.end_after) {
                    self.state = State::Idle;
                    let serial = self.serial;
                    self.serial += 1;
                    Some(Transition {
                        phase: TransitionPhase::End,
                        onset,
                        last_active,
                        at: o.t,
                        bbox,
                        area: peak,
                        serial,
                    })
                } else {
                    None
                }
            }
        }
    }

    fn try_start(&mut self, o: Observation) -> Option<Transition> {
        let State::Pending { onset } = self.state else { return None };
        if o.t - onset + EPS < self.params.start_after.as_secs_f64() {
            return None;
        }
        self.state = State::Active { onset, last_active: o.t, last_emit: o.t, bbox: o.bbox, peak: o.area };
        Some(Transition {
            phase: TransitionPhase::Start,
            onset,
            last_active: o.t,
            at: o.t,
            bbox: o.bbox,
            area: o.area,
            serial: self.serial,
        })
    }

    /// Ends an open event at media time `t` (shutdown, end of stream). L5: nothing stays open.
    pub fn finish(&mut self, t: f64) -> Option<Transition> {
        let State::Active { onset, last_active, bbox, peak, .. } = self.state else {
            self.state = State::Idle;
            return None;
        };
        self.state = State::Idle;
        let serial = self.serial;
        self.serial += 1;
        Some(Transition { phase: TransitionPhase::End, onset, last_active, at: t, bbox, area: peak, serial })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransitionPhase::*;

    fn params() -> LifecycleParams {
        LifecycleParams {
            start_after: Duration::from_millis(200),
            update_interval: Duration::from_secs(1),
            end_after: Duration::from_millis(500),
        }
    }

    /// (t, phase, onset) of one transition.
    type Seen = (f64, TransitionPhase, f64);
    /// (what, frames as (t, active), expected transitions).
    type Case = (&'static str, Vec<(f64, bool)>, Vec<Seen>);

    /// Runs a table of (t, active) frames and returns (t, phase, onset) of every transition.
    fn run(frames: &[(f64, bool)]) -> Vec<Seen> {
        let mut l = Lifecycle::new(params());
        frames
            .iter()
            .filter_map(|&(t, active)| {
                l.observe(Observation { t, active, bbox: None, area: if active { 0.1 } else { 0.0 } })
            })
            .map(|tr| (tr.at, tr.phase, tr.onset))
            .collect()
    }

    fn frames(from: f64, to: f64, active: bool) -> Vec<(f64, bool)> {
        let mut v = Vec::new();
        let mut t = from;
        while t < to - 1e-9 {
            v.push(((t * 10.0).round() / 10.0, active));
            t += 0.1;
        }
        v
    }

    #[test]
    fn table() {
        // (description, frames, expected transitions)
        let cases: Vec<Case> = vec![
            ("nothing happens", frames(0.0, 3.0, false), vec![]),
            (
                "a blip shorter than start_after is ignored",
                [frames(0.0, 1.0, false), frames(1.0, 1.1, true), frames(1.1, 3.0, false)].concat(),
                vec![],
            ),
            (
                "start after 200 ms, end 500 ms after the last active frame",
                [frames(0.0, 1.0, false), frames(1.0, 1.5, true), frames(1.5, 3.0, false)].concat(),
                vec![(1.2, Start, 1.0), (1.9, End, 1.0)],
            ),
            (
                "updates at most once a second while active",
                [frames(0.0, 3.5, true), frames(3.5, 5.0, false)].concat(),
                vec![(0.2, Start, 0.0), (1.2, Update, 0.0), (2.2, Update, 0.0), (3.2, Update, 0.0), (3.9, End, 0.0)],
            ),
            (
                "a gap shorter than end_after does not split the event",
                [frames(0.0, 0.5, true), frames(0.5, 0.8, false), frames(0.8, 1.0, true), frames(1.0, 2.0, false)]
                    .concat(),
                vec![(0.2, Start, 0.0), (1.4, End, 0.0)],
            ),
            (
                "two events separated by a long gap",
                [frames(0.0, 0.5, true), frames(0.5, 2.0, false), frames(2.0, 2.5, true), frames(2.5, 4.0, false)]
                    .concat(),
                vec![(0.2, Start, 0.0), (0.9, End, 0.0), (2.2, Start, 2.0), (2.9, End, 2.0)],
            ),
        ];
        for (what, f, want) in cases {
            assert_eq!(run(&f), want, "{what}");
        }
    }

    #[test]
    fn finish_ends_open_event_once() {
        let mut l = Lifecycle::new(params());
        for (t, a) in frames(0.0, 1.0, true) {
            l.observe(Observation { t, active: a, bbox: None, area: 0.2 });
        }
        let end = l.finish(1.0).unwrap();
        assert_eq!((end.phase, end.onset, end.at, end.area), (End, 0.0, 1.0, 0.2));
        assert!(l.finish(1.1).is_none());
        assert!(!l.is_active());
    }

    #[test]
    fn end_reports_peak_area_and_serial_advances() {
        let mut l = Lifecycle::new(params());
        let mut out = Vec::new();
        for (i, (t, a)) in
            [frames(0.0, 0.5, true), frames(0.5, 1.5, false), frames(1.5, 2.0, true), frames(2.0, 3.0, false)]
                .concat()
                .into_iter()
                .enumerate()
        {
            out.extend(l.observe(Observation {
                t,
                active: a,
                bbox: None,
                area: if a { i as f64 / 100.0 } else { 0.0 },
            }));
        }
        assert_eq!(out.iter().map(|t| t.serial).collect::<Vec<_>>(), vec![0, 0, 1, 1]);
        assert_eq!(out[1].area, 0.04);
    }
}
