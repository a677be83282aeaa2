//! The analysis stage shared by the live box and offline replay: static-masked frames in,
//! events out. Motion → zones → lifecycle → event contract. Design: `edge/docs/design/events.md`.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use vakt_core::clock::Clock;
use vakt_core::config::Config;
use vakt_core::counters::SeqAllocator;
use vakt_core::event::{EVENT_VERSION, Event, EventKind, Phase, rfc3339, round};
use vakt_core::lifecycle::{Lifecycle, LifecycleParams, Observation, Transition, TransitionPhase};
use vakt_core::rules::RuleEvent;
use vakt_media::StaticMaskedFrame;
use vakt_vision::{BackgroundMotion, GrayFrame, MotionDetector, MotionParams, MotionResult, ZoneSet, resize_gray};

use crate::objects::{ObjectCounters, ObjectStage, Schedule, TrackedObject};
use crate::scene::TamperStage;

/// Who the events are from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub box_id: String,
    pub site: String,
    pub camera: String,
    pub boot: u64,
}

/// Builds contract events: ids, seq, timestamps.
pub struct EventFactory {
    origin: Origin,
    seq: SeqAllocator,
    clock: Box<dyn Clock>,
    /// Identity and start time of each open event, fixed at its `start` so that its updates and
    /// its end carry exactly the same `id` and `started_at` (E2). Keyed by kind, zone, subject
    /// (a rule's class or direction) and serial.
    open: HashMap<EventKey, (String, OffsetDateTime)>,
}

type EventKey = (EventKind, Option<String>, Option<String>, u64);

/// An event's identity is derived, not random: unique per (box, boot, kind, zone, serial), and
/// identical across two replays of the same input.
fn event_id(o: &Origin, key: &EventKey, onset: OffsetDateTime) -> String {
    let (kind, zone, subject, serial) = key;
    let mut h = Sha256::new();
    for part in [o.box_id.as_str(), o.camera.as_str(), kind.as_str(), zone.as_deref().unwrap_or("")] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    // events without a subject hash exactly as before subjects existed: ids stay stable
    if let Some(s) = subject {
        h.update(s.as_bytes());
        h.update([0]);
    }
    h.update(o.boot.to_be_bytes());
    h.update(serial.to_be_bytes());
    let d = h.finalize();
    let mut r = [0u8; 16];
    r[6..].copy_from_slice(&d[..10]);
    let ms = (onset.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
    ulid::Ulid::from_parts(ms, u128::from_be_bytes(r)).to_string()
}

impl EventFactory {
    pub fn new(origin: Origin, seq: SeqAllocator, clock: Box<dyn Clock>) -> Self {
        EventFactory { origin, seq, clock, open: HashMap::new() }
    }

    fn build(
        &mut self,
        kind: EventKind,
        zone: Option<&str>,
        subject: Option<&str>,
        tr: &Transition,
        attrs: serde_json::Map<String, serde_json::Value>,
    ) -> std::io::Result<Event> {
        let at = self.clock.wall(tr.at);
        let phase = match tr.phase {
            TransitionPhase::Start => Phase::Start,
            TransitionPhase::Update => Phase::Update,
            TransitionPhase::End => Phase::End,
            TransitionPhase::Instant => Phase::Instant,
        };
        let key = (kind, zone.map(str::to_string), subject.map(str::to_string), tr.serial);
        let (id, started) = match self.open.get(&key) {
            Some(known) => known.clone(),
            None => {
                let started = at - time::Duration::seconds_f64(tr.at - tr.onset);
                let known = (event_id(&self.origin, &key, started), started);
                if phase != Phase::Instant {
                    self.open.insert(key.clone(), known.clone());
                }
                known
            }
        };
        if phase == Phase::End {
            self.open.remove(&key);
        }
        let ended_at = matches!(phase, Phase::End | Phase::Instant)
            .then(|| rfc3339(at - time::Duration::seconds_f64(tr.at - tr.last_active)));
        Ok(Event {
            v: EVENT_VERSION,
            id,
            box_id: self.origin.box_id.clone(),
            site: self.origin.site.clone(),
            camera: self.origin.camera.clone(),
            kind,
            phase,
            zone: zone.map(str::to_string),
            started_at: rfc3339(started),
            ended_at,
            at: rfc3339(at),
            seq: self.seq.allocate()?,
            boot: self.origin.boot,
            bbox: tr.bbox.map(|b| b.map(|v| round(v, 4))),
            area: round(tr.area, 5),
            media_time_s: round(tr.at, 3),
            onset_media_time_s: round(tr.onset, 3),
            attrs,
            sig: None,
        })
    }
}

/// Signal-lost state as a lifecycle of its own (start on loss, end on return).
struct SignalState {
    onset: f64,
    reason: String,
    serial: u64,
}

/// One analysed frame.
pub struct Analysed {
    pub motion: MotionResult,
    pub events: Vec<Event>,
    /// Reported tracks (input pixels) and whether the detector ran; `None` without detection.
    pub objects: Option<(Schedule, Vec<TrackedObject>)>,
    /// Everything the detector found, when it ran on this frame (for the masker).
    pub detector_result: Option<vakt_core::redaction::DetectorResult>,
}

/// Motion and object analysis and event lifecycles for one camera.
pub struct Analyzer {
    detector: Box<dyn MotionDetector>,
    motion_width: u32,
    objects: Option<ObjectStage>,
    zones: ZoneSet,
    lifecycles: Vec<Lifecycle>,
    last_blobs: Vec<u32>,
    min_zone_area: f64,
    factory: EventFactory,
    signal: Option<SignalState>,
    signal_serial: u64,
    last_t: f64,
    tamper: Option<TamperStage>,
    /// `housing_opened`, switched by the enclosure's switch.
    housing: Switch,
    /// `storage_failed`, switched by the recorder.
    storage: Switch,
    /// `broker_unreachable`, switched from the MQTT link's state.
    broker: Switch,
    /// `events_dropped` messages so far (their serials).
    dropped_reports: u64,
}

/// A whole-view alarm that something outside the video switches on and off (the housing switch,
/// the recorder): its open event's onset and serial.
#[derive(Debug, Default)]
struct Switch {
    open: Option<(f64, u64)>,
    serial: u64,
}

impl Switch {
    fn is_on(&self) -> bool {
        self.open.is_some()
    }

    /// The transition that `on` at media time `t` causes, if any.
    fn set(&mut self, on: bool, t: f64) -> Option<Transition> {
        match (on, self.open) {
            (true, None) => {
                let serial = self.serial;
                self.serial += 1;
                self.open = Some((t, serial));
                Some(Transition::whole_view_start(t, serial))
            }
            (false, Some((onset, serial))) => {
                self.open = None;
                Some(Transition::whole_view_end(onset, t, serial))
            }
            _ => None,
        }
    }
}

impl Analyzer {
    /// `tamper` is `None` when `[tamper] enabled = false`; `objects` is `None` when
    /// `[detect] enabled = false`.
    pub fn new(
        cfg: &Config,
        factory: EventFactory,
        tamper: Option<TamperStage>,
        objects: Option<ObjectStage>,
    ) -> Result<Self, vakt_vision::VisionError> {
        let detector = Box::new(BackgroundMotion::new(MotionParams::from_config(&cfg.motion))?);
        let zones = ZoneSet::new(&cfg.zones.iter().map(|z| (z.name.clone(), z.polygon.clone())).collect::<Vec<_>>());
        let params = LifecycleParams {
            start_after: cfg.events.start_after,
            update_interval: cfg.events.update_interval,
            end_after: cfg.events.end_after,
        };
        let n = zones.names().len();
        Ok(Analyzer {
            detector,
            motion_width: cfg.motion.width,
            objects,
            zones,
            lifecycles: vec![Lifecycle::new(params); n],
            last_blobs: vec![0; n],
            min_zone_area: cfg.events.min_zone_area,
            factory,
            signal: None,
            signal_serial: 0,
            last_t: 0.0,
            tamper,
            housing: Switch::default(),
            storage: Switch::default(),
            broker: Switch::default(),
            dropped_reports: 0,
        })
    }

    /// Analyses one frame: its motion, its objects, and the events they caused.
    pub fn process(&mut self, frame: &StaticMaskedFrame) -> anyhow::Result<Analysed> {
        let t = frame.media_time_s();
        self.last_t = t;
        // Frames come at the detector's width when detection is on: motion and tamper checks run
        // on a copy scaled to motion.width, as they were tuned.
        let full = GrayFrame { width: frame.width(), height: frame.height(), data: frame.data() };
        let scaled = (frame.width() != self.motion_width).then(|| resize_gray(full, self.motion_width)).transpose()?;
        let gray = match &scaled {
            Some((data, width, height)) => GrayFrame { width: *width, height: *height, data },
            None => full,
        };
        let motion = self.detector.detect(gray, t)?;
        let measured = self.zones.measure(&motion);
        let mut events = Vec::new();
        for (i, zm) in measured.iter().enumerate() {
            let active = zm.area >= self.min_zone_area.max(f64::MIN_POSITIVE) && zm.bbox.is_some();
            if active {
                self.last_blobs[i] = zm.blobs;
            }
            let obs = Observation { t, active, bbox: zm.bbox, area: zm.area };
            if let Some(tr) = self.lifecycles[i].observe(obs) {
                events.push(self.motion_event(i, &tr)?);
            }
        }
        if let Some(stage) = &mut self.tamper {
            for tt in stage.process(gray, t)? {
                events.push(self.tamper_event(tt)?);
            }
        }
        let (objects, detector_result) = match &mut self.objects {
            Some(stage) => {
                let o = stage.process(frame, &motion)?;
                for re in o.events {
                    events.push(self.rule_event(re)?);
                }
                (Some((o.schedule, o.objects)), o.result)
            }
            None => (None, None),
        };
        Ok(Analysed { motion, events, objects, detector_result })
    }

    fn rule_event(&mut self, re: RuleEvent) -> anyhow::Result<Event> {
        Ok(self.factory.build(re.kind, re.zone.as_deref(), re.subject.as_deref(), &re.transition, re.attrs)?)
    }

    fn end_rules(&mut self, t: f64) -> anyhow::Result<Vec<Event>> {
        let ends = self.objects.as_mut().map(|o| o.finish(t)).unwrap_or_default();
        ends.into_iter().map(|re| self.rule_event(re)).collect()
    }

    /// Prepares object analysis for redaction (pictures leave the box): the detector runs at
    /// `detect.interval` whatever the scene does, with the face detector when configured.
    pub fn prepare_for_redaction(&mut self, cfg: &Config) -> anyhow::Result<()> {
        match &mut self.objects {
            Some(o) => o.prepare_for_redaction(cfg),
            None => Ok(()),
        }
    }

    pub fn object_counters(&self) -> Option<ObjectCounters> {
        self.objects.as_ref().map(ObjectStage::counters)
    }

    fn tamper_event(&mut self, tt: vakt_core::tamper::TamperTransition) -> anyhow::Result<Event> {
        let mut tr = tt.transition;
        let mut attrs = serde_json::Map::new();
        // area: the dark or saturated share of the frame; the other conditions concern the
        // whole picture and report their measurement in attrs.
        tr.area = match tt.kind {
            EventKind::TooDark | EventKind::TooBright if tt.value.is_finite() => tt.value.clamp(0.0, 1.0),
            _ => 0.0,
        };
        if tt.value.is_finite() {
            let name = match tt.kind {
                EventKind::TooDark => "dark_fraction",
                EventKind::TooBright => "bright_fraction",
                EventKind::TooBlurry => "sharpness_ratio",
                _ => "similarity",
            };
            attrs.insert(name.into(), round(tt.value, 3).into());
        }
        Ok(self.factory.build(tt.kind, None, None, &tr, attrs)?)
    }

    /// The housing switch changed (debounced). Not a video measurement: stamped with the media
    /// time of the last analysed frame.
    pub fn housing(&mut self, open: bool) -> anyhow::Result<Vec<Event>> {
        let Some(tr) = self.housing.set(open, self.last_t) else { return Ok(Vec::new()) };
        Ok(vec![self.factory.build(EventKind::HousingOpened, None, None, &tr, serde_json::Map::new())?])
    }

    /// The recorder reports it cannot write (`Some(detail)`) or writes again (`None`). Stamped
    /// with the media time of the last analysed frame, like the housing switch.
    pub fn storage(&mut self, failure: Option<&str>) -> anyhow::Result<Vec<Event>> {
        let Some(tr) = self.storage.set(failure.is_some(), self.last_t) else { return Ok(Vec::new()) };
        let mut attrs = serde_json::Map::new();
        if let Some(detail) = failure {
            attrs.insert("detail".into(), detail.into());
        }
        Ok(vec![self.factory.build(EventKind::StorageFailed, None, None, &tr, attrs)?])
    }

    /// The report of messages the outbox dropped unsent (`events_dropped`, one `instant`).
    pub fn events_dropped(&mut self, d: &crate::outbox::Dropped) -> anyhow::Result<Event> {
        let tr = Transition::instant(self.last_t, self.dropped_reports);
        self.dropped_reports += 1;
        let mut attrs = serde_json::Map::new();
        attrs.insert("ranges".into(), serde_json::json!(d.ranges.iter().map(|(a, b)| [a, b]).collect::<Vec<_>>()));
        attrs.insert("count".into(), d.count.into());
        attrs.insert("reason".into(), d.reason.into());
        Ok(self.factory.build(EventKind::EventsDropped, None, None, &tr, attrs)?)
    }

    /// `clock_jumped`: the wall clock stepped by `jump_s` seconds.
    pub fn clock_jumped(&mut self, jump_s: f64) -> anyhow::Result<Event> {
        let tr = Transition::instant(self.last_t, self.dropped_reports);
        self.dropped_reports += 1;
        let mut attrs = serde_json::Map::new();
        attrs.insert("jump_s".into(), round(jump_s, 1).into());
        Ok(self.factory.build(EventKind::ClockJumped, None, None, &tr, attrs)?)
    }

    /// `broker_unreachable` while the link has been down `down_for` (None: up, or not long
    /// enough to count).
    pub fn broker(&mut self, down_for: Option<std::time::Duration>) -> anyhow::Result<Vec<Event>> {
        let Some(tr) = self.broker.set(down_for.is_some(), self.last_t) else { return Ok(Vec::new()) };
        let mut attrs = serde_json::Map::new();
        if let Some(d) = down_for {
            attrs.insert("down_s".into(), d.as_secs().into());
        }
        Ok(vec![self.factory.build(EventKind::BrokerUnreachable, None, None, &tr, attrs)?])
    }

    /// Alarm conditions open now: the status is `degraded` while any is.
    pub fn alarms(&self) -> Vec<&'static str> {
        let mut a: Vec<&'static str> =
            self.tamper.as_ref().map(|t| t.active().into_iter().map(EventKind::as_str).collect()).unwrap_or_default();
        if self.signal.is_some() {
            a.push(EventKind::SignalLost.as_str());
        }
        if self.housing.is_on() {
            a.push(EventKind::HousingOpened.as_str());
        }
        if self.objects.as_ref().is_some_and(ObjectStage::stalled) {
            a.push(EventKind::DetectorStalled.as_str());
        }
        if self.storage.is_on() {
            a.push(EventKind::StorageFailed.as_str());
        }
        if self.broker.is_on() {
            a.push(EventKind::BrokerUnreachable.as_str());
        }
        a
    }

    fn end_tamper(&mut self, t: f64) -> anyhow::Result<Vec<Event>> {
        let ends = self.tamper.as_mut().map(|s| s.finish(t)).unwrap_or_default();
        ends.into_iter().map(|tt| self.tamper_event(tt)).collect()
    }

    fn motion_event(&mut self, zone_index: usize, tr: &Transition) -> anyhow::Result<Event> {
        let zone = self.zones.names()[zone_index].clone();
        let mut attrs = serde_json::Map::new();
        attrs.insert("blobs".into(), self.last_blobs[zone_index].into());
        Ok(self.factory.build(EventKind::Motion, zone.as_deref(), None, tr, attrs)?)
    }

    /// The camera stopped delivering frames.
    pub fn signal_lost(&mut self, reason: &str, media_time_s: f64) -> anyhow::Result<Vec<Event>> {
        if self.signal.is_some() {
            return Ok(Vec::new());
        }
        // Motion and the picture cannot be judged without frames: end what is open first.
        let mut events = self.end_all(media_time_s)?;
        events.extend(self.end_rules(media_time_s)?);
        events.extend(self.end_tamper(media_time_s)?);
        let serial = self.signal_serial;
        self.signal_serial += 1;
        self.signal = Some(SignalState { onset: media_time_s, reason: reason.to_string(), serial });
        let tr = Transition {
            phase: TransitionPhase::Start,
            onset: media_time_s,
            last_active: media_time_s,
            at: media_time_s,
            bbox: None,
            area: 0.0,
            serial,
        };
        events.push(self.signal_event(&tr, reason)?);
        Ok(events)
    }

    /// Frames flow again.
    pub fn signal_restored(&mut self, media_time_s: f64) -> anyhow::Result<Vec<Event>> {
        let Some(s) = self.signal.take() else { return Ok(Vec::new()) };
        let at = media_time_s.max(s.onset);
        let tr = Transition {
            phase: TransitionPhase::End,
            onset: s.onset,
            last_active: at,
            at,
            bbox: None,
            area: 0.0,
            serial: s.serial,
        };
        Ok(vec![self.signal_event(&tr, &s.reason)?])
    }

    fn signal_event(&mut self, tr: &Transition, reason: &str) -> anyhow::Result<Event> {
        let mut attrs = serde_json::Map::new();
        attrs.insert("reason".into(), reason.into());
        Ok(self.factory.build(EventKind::SignalLost, None, None, tr, attrs)?)
    }

    fn end_all(&mut self, t: f64) -> anyhow::Result<Vec<Event>> {
        let mut events = Vec::new();
        for i in 0..self.lifecycles.len() {
            if let Some(tr) = self.lifecycles[i].finish(t) {
                events.push(self.motion_event(i, &tr)?);
            }
        }
        Ok(events)
    }

    /// Ends every open event (shutdown, end of stream). L5.
    pub fn finish(&mut self) -> anyhow::Result<Vec<Event>> {
        let t = self.last_t;
        let mut events = self.end_all(t)?;
        events.extend(self.end_rules(t)?);
        events.extend(self.end_tamper(t)?);
        if self.housing.is_on() {
            events.extend(self.housing(false)?);
        }
        if self.storage.is_on() {
            events.extend(self.storage(None)?);
        }
        if self.broker.is_on() {
            events.extend(self.broker(None)?);
        }
        if self.signal.is_some() {
            events.extend(self.signal_restored(t)?);
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vakt_core::clock::MediaClock;

    fn analyzer() -> Analyzer {
        let cfg = vakt_core::config::parse(
            "[box]\nid = \"b1\"\nsite = \"s\"\n[source]\nuri = \"test://ball\"\n[mqtt]\nurl = \"mqtt://h:1\"\ninsecure_plaintext = true\n[storage]\nrecord = false\n",
            std::path::Path::new("/"),
        )
        .unwrap();
        let origin = Origin { box_id: "b1".into(), site: "s".into(), camera: "cam0".into(), boot: 1 };
        let clock = MediaClock { anchor: time::OffsetDateTime::UNIX_EPOCH };
        Analyzer::new(&cfg, EventFactory::new(origin, SeqAllocator::ephemeral(), Box::new(clock)), None, None).unwrap()
    }

    #[test]
    fn the_housing_switch_raises_and_clears_one_alarm() {
        let mut a = analyzer();
        let start = a.housing(true).unwrap();
        assert_eq!(start.len(), 1);
        assert_eq!((start[0].kind, start[0].phase), (EventKind::HousingOpened, Phase::Start));
        assert_eq!(a.alarms(), vec!["housing_opened"]);
        assert!(a.housing(true).unwrap().is_empty(), "a repeated open is not a new event");
        let end = a.housing(false).unwrap();
        assert_eq!((end[0].phase, &end[0].id), (Phase::End, &start[0].id));
        assert!(end[0].ended_at.is_some());
        assert!(a.alarms().is_empty());
        assert!(a.housing(false).unwrap().is_empty());
    }

    #[test]
    fn an_open_housing_is_ended_at_shutdown() {
        let mut a = analyzer();
        a.housing(true).unwrap();
        let ends = a.finish().unwrap();
        assert!(ends.iter().any(|e| e.kind == EventKind::HousingOpened && e.phase == Phase::End), "{ends:?}");
    }
}
