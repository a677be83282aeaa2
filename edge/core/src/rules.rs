//! Analytics rules: confirmed tracks in, presence, loitering, crowding, running and line-crossing
//! transitions out. Pure: no clock, no I/O; time is the media time the caller passes.
//! Design: `edge/docs/design/rules.md` (rules B1–B12).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::detect::ObjectClass;
use crate::event::{EventKind, round};
use crate::geometry::{BBox, Polygon};
use crate::lifecycle::{Lifecycle, LifecycleParams, Observation, Transition, TransitionPhase};

/// A person's dwell in a zone survives absences up to this long (B5): detectors miss people for a
/// few frames, and someone passing behind a pillar has not left.
pub const LOITER_GRACE: Duration = Duration::from_secs(2);
/// A position closer than this to a line (share of the frame) is not on either side (B9).
pub const LINE_MARGIN: f64 = 0.01;
/// Per-track state of a track not passed for longer than this is forgotten (B11).
pub const FORGET_AFTER: Duration = Duration::from_secs(5);
/// A track younger than this has no trustworthy velocity yet, so it never counts as running (B7).
pub const RUNNING_MIN_AGE: Duration = Duration::from_millis(500);
/// Longest `tracks` list in an event's `attrs` (B3): bounds the message, `count` says how many.
pub const MAX_TRACK_IDS: usize = 50;

/// Media times are f64 seconds; comparisons tolerate a nanosecond of rounding (as `lifecycle`).
const EPS: f64 = 1e-9;

/// One confirmed track at one frame, in normalised frame coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleObject {
    pub track: u64,
    pub class: ObjectClass,
    /// Normalised `[left, top, width, height]`.
    pub bbox: BBox,
    /// The box is a prediction: the track was not matched at this frame (the detector did not
    /// run, or did not find it). Line crossing ignores such boxes (B9).
    pub coasting: bool,
    /// The detector missed the track at its last run: its velocity is no longer measured.
    /// Running ignores such tracks (B7); a track merely predicted between two runs still counts.
    pub missed: bool,
    /// Centre speed, share of the frame per second.
    pub speed: f64,
    /// Centre speed in the object's own box heights per second (independent of perspective).
    pub speed_heights: f64,
    /// Seconds since the track was first seen.
    pub age_s: f64,
}

/// A zone the rules watch, with its per-zone thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleZone {
    /// `None`: the whole frame (no zones configured).
    pub name: Option<String>,
    /// `None`: the whole frame.
    pub polygon: Option<Polygon>,
    /// A person staying longer than this is loitering.
    pub loiter_time: Duration,
    /// Crowding: more than this many people ...
    pub crowd_size: u32,
    /// ... for longer than this.
    pub crowd_time: Duration,
}

/// A counting line.
#[derive(Debug, Clone, PartialEq)]
pub struct LineRule {
    pub name: String,
    /// Normalised endpoints; the direction a→b defines left and right (B9).
    pub a: (f64, f64),
    pub b: (f64, f64),
    /// Classes counted.
    pub classes: Vec<ObjectClass>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RulesParams {
    /// Classes that get a presence event per zone.
    pub presence_classes: Vec<ObjectClass>,
    /// Box heights per second.
    pub running_speed: f64,
    /// At least this many people at once.
    pub running_people: u32,
    /// For at least this long.
    pub running_time: Duration,
    /// The box's `[events]` start_after / update_interval / end_after.
    pub events: LifecycleParams,
}

/// One transition to publish as an event.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleEvent {
    pub kind: EventKind,
    /// The zone's name, or the line's name for `LineCrossed`.
    pub zone: Option<String>,
    /// Presence: the class name; LineCrossed: the direction; otherwise `None`.
    pub subject: Option<String>,
    pub transition: Transition,
    pub attrs: Map<String, Value>,
}

/// The rules of one camera: per-zone lifecycles, per-track dwell and line state.
#[derive(Debug, Clone)]
pub struct RuleEngine {
    params: RulesParams,
    zones: Vec<ZoneRules>,
    lines: Vec<LineCounter>,
    /// Media time each track was last passed, for forgetting (B11).
    last_seen: BTreeMap<u64, f64>,
    /// The latest media time seen (B12).
    last_t: Option<f64>,
}

impl RuleEngine {
    /// The engine a config describes: `[rules]`, the `[events]` lifecycle, `[[zones]]` (or the
    /// whole frame when there are none) and `[[lines]]`. The box and the rule truth of the
    /// benchmarks build it here, so both judge with the same rules.
    pub fn from_config(cfg: &crate::config::Config) -> RuleEngine {
        let params = RulesParams {
            presence_classes: cfg.rules.presence_classes.clone(),
            running_speed: cfg.rules.running_speed,
            running_people: cfg.rules.running_people,
            running_time: cfg.rules.running_time,
            events: LifecycleParams {
                start_after: cfg.events.start_after,
                update_interval: cfg.events.update_interval,
                end_after: cfg.events.end_after,
            },
        };
        let zones = if cfg.zones.is_empty() {
            vec![RuleZone {
                name: None,
                polygon: None,
                loiter_time: cfg.rules.loiter_time,
                crowd_size: cfg.rules.crowd_size,
                crowd_time: cfg.rules.crowd_time,
            }]
        } else {
            cfg.zones
                .iter()
                .map(|z| RuleZone {
                    name: Some(z.name.clone()),
                    polygon: Some(z.polygon.clone()),
                    loiter_time: z.loiter_time,
                    crowd_size: z.crowd_size,
                    crowd_time: z.crowd_time,
                })
                .collect()
        };
        let lines = cfg
            .lines
            .iter()
            .map(|l| LineRule {
                name: l.name.clone(),
                a: (l.a[0], l.a[1]),
                b: (l.b[0], l.b[1]),
                classes: l.classes.clone(),
            })
            .collect();
        RuleEngine::new(params, zones, lines)
    }

    pub fn new(params: RulesParams, zones: Vec<RuleZone>, lines: Vec<LineRule>) -> RuleEngine {
        let zones = zones.into_iter().map(|zone| ZoneRules::new(zone, &params)).collect();
        let lines = lines.into_iter().map(LineCounter::new).collect();
        RuleEngine { params, zones, lines, last_seen: BTreeMap::new(), last_t: None }
    }

    /// Objects of the frame at media time `t` (seconds, non-decreasing). Pure, deterministic.
    pub fn update(&mut self, t: f64, objects: &[RuleObject]) -> Vec<RuleEvent> {
        // B12: a frame without a usable time cannot be placed on the timeline; skip it.
        if !t.is_finite() {
            return Vec::new();
        }
        let t = self.advance(t);
        self.forget(t);
        // B12: invalid objects are dropped here, so no rule sees NaN; sorting by id makes the
        // output independent of the caller's order (B10).
        let mut objects: Vec<Located> = objects.iter().filter(|o| is_valid(o)).map(Located::new).collect();
        objects.sort_by_key(|o| o.obj.track);
        for o in &objects {
            self.last_seen.insert(o.obj.track, t);
        }
        let mut out = Vec::new();
        for z in &mut self.zones {
            z.update(t, &objects, &self.params, &mut out);
        }
        for l in &mut self.lines {
            l.update(t, &objects, &mut out);
        }
        out
    }

    /// Ends every open event at `t` (shutdown, end of stream, signal lost), and forgets every
    /// track: after it the engine starts afresh, but serial numbers continue (B11).
    pub fn finish(&mut self, t: f64) -> Vec<RuleEvent> {
        let t = if t.is_finite() { self.advance(t) } else { self.last_t.unwrap_or(0.0) };
        let mut out = Vec::new();
        for z in &mut self.zones {
            z.finish(t, &mut out);
        }
        for l in &mut self.lines {
            l.settled.clear();
        }
        self.last_seen.clear();
        out
    }

    /// Names of the events open now, for logs: `kind[:subject][@zone]`, e.g. `presence:person@gate`.
    pub fn open_events(&self) -> Vec<String> {
        let mut names = Vec::new();
        for z in &self.zones {
            z.open_events(&mut names);
        }
        names
    }

    /// Moves the engine's clock to `t`, never backwards (B12), and returns the time to use.
    fn advance(&mut self, t: f64) -> f64 {
        let t = self.last_t.map_or(t, |last| t.max(last));
        self.last_t = Some(t);
        t
    }

    /// B11: drops the state of tracks not passed for longer than `FORGET_AFTER`, and dwells
    /// whose grace has run out (B5).
    fn forget(&mut self, t: f64) {
        let limit = FORGET_AFTER.as_secs_f64();
        let gone: Vec<u64> =
            self.last_seen.iter().filter(|&(_, &seen)| t - seen > limit + EPS).map(|(&id, _)| id).collect();
        for id in &gone {
            self.last_seen.remove(id);
            for l in &mut self.lines {
                l.settled.remove(id);
            }
        }
        let grace = LOITER_GRACE.as_secs_f64();
        for z in &mut self.zones {
            z.dwell.retain(|_, d| t - d.last_in <= grace + EPS);
        }
    }
}

/// A valid input object with its anchor.
#[derive(Debug, Clone, Copy)]
struct Located<'a> {
    obj: &'a RuleObject,
    /// Bottom-centre of the box: where the object stands on the ground (B1).
    anchor: (f64, f64),
}

impl<'a> Located<'a> {
    fn new(obj: &'a RuleObject) -> Located<'a> {
        let [left, top, width, height] = obj.bbox;
        Located { obj, anchor: (left + width / 2.0, top + height) }
    }

    fn is_person(&self) -> bool {
        self.obj.class == ObjectClass::Person
    }
}

/// B12: every number a rule reads must be finite, and a box must not have a negative size.
fn is_valid(o: &RuleObject) -> bool {
    o.bbox.iter().all(|v| v.is_finite())
        && o.bbox[2] >= 0.0
        && o.bbox[3] >= 0.0
        && o.speed.is_finite()
        && o.speed_heights.is_finite()
        && o.age_s.is_finite()
}

/// The smallest box around `boxes`, clipped to the frame (the event contract keeps boxes in 0..1).
fn union_box<'a>(boxes: impl IntoIterator<Item = &'a BBox>) -> Option<BBox> {
    let mut edges: Option<[f64; 4]> = None;
    for b in boxes {
        let e = [b[0], b[1], b[0] + b[2], b[1] + b[3]];
        edges = Some(match edges {
            None => e,
            Some(u) => [u[0].min(e[0]), u[1].min(e[1]), u[2].max(e[2]), u[3].max(e[3])],
        });
    }
    edges.map(|e| {
        let [x0, y0, x1, y1] = e.map(|v| v.clamp(0.0, 1.0));
        [x0, y0, (x1 - x0).max(0.0), (y1 - y0).max(0.0)]
    })
}

/// One box clipped to the frame; a box already inside is returned untouched (no rounding).
fn clip_box(b: &BBox) -> BBox {
    let inside = b[0] >= 0.0 && b[1] >= 0.0 && b[0] + b[2] <= 1.0 && b[1] + b[3] <= 1.0;
    if inside { *b } else { union_box([b]).unwrap_or([0.0; 4]) }
}

/// Where a person's dwell in a zone stands (B5).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Dwell {
    /// First frame of the dwell.
    since: f64,
    /// Last frame the track was in the zone.
    last_in: f64,
}

/// What one frame shows for one rule key.
#[derive(Debug, Clone, Default)]
struct Measure {
    count: usize,
    /// Sorted track ids.
    tracks: Vec<u64>,
    bbox: Option<BBox>,
    /// Longest dwell (loitering) or highest speed (running); 0 where unused.
    value: f64,
}

impl Measure {
    /// `objects` must be sorted by track id (they are: `update` sorts them).
    fn of(objects: &[Located], value: f64) -> Measure {
        let mut tracks: Vec<u64> = objects.iter().map(|o| o.obj.track).collect();
        tracks.dedup();
        Measure { count: objects.len(), tracks, bbox: union_box(objects.iter().map(|o| &o.obj.bbox)), value }
    }
}

/// What an `end` reports about the whole event (B3): peaks and the tracks involved.
#[derive(Debug, Clone, Default, PartialEq)]
struct Summary {
    peak_count: usize,
    /// The smallest (earliest, as ids only grow) `MAX_TRACK_IDS` ids seen, so memory stays bounded.
    tracks: BTreeSet<u64>,
    peak_value: f64,
}

impl Summary {
    fn add(&mut self, m: &Measure) {
        self.peak_count = self.peak_count.max(m.count);
        self.peak_value = self.peak_value.max(m.value);
        for &id in &m.tracks {
            self.tracks.insert(id);
            if self.tracks.len() > MAX_TRACK_IDS {
                self.tracks.pop_last();
            }
        }
    }
}

/// The figures one transition reports: the frame's for `start` / `update`, the event's for `end`.
#[derive(Debug, Clone, PartialEq)]
struct Figures {
    count: usize,
    tracks: Vec<u64>,
    value: f64,
}

impl From<&Measure> for Figures {
    fn from(m: &Measure) -> Figures {
        Figures { count: m.count, tracks: m.tracks.iter().copied().take(MAX_TRACK_IDS).collect(), value: m.value }
    }
}

impl From<Summary> for Figures {
    fn from(s: Summary) -> Figures {
        Figures { count: s.peak_count, tracks: s.tracks.into_iter().collect(), value: s.peak_value }
    }
}

/// One rule key (zone × kind, or zone × class for presence): a lifecycle plus its event summary.
#[derive(Debug, Clone)]
struct Rule {
    lifecycle: Lifecycle,
    /// Accumulated over the active frames since the onset; cleared when the key returns to Idle.
    summary: Summary,
}

impl Rule {
    fn new(params: LifecycleParams) -> Rule {
        Rule { lifecycle: Lifecycle::new(params), summary: Summary::default() }
    }

    /// Feeds one frame; returns the transition with the figures it reports.
    fn observe(&mut self, t: f64, active: bool, m: &Measure) -> Option<(Transition, Figures)> {
        if active {
            self.summary.add(m);
        }
        let (bbox, area) = match m.bbox {
            Some(b) if active => (Some(b), b[2] * b[3]),
            _ => (None, 0.0),
        };
        let transition = self.lifecycle.observe(Observation { t, active, bbox, area });
        let figures = match transition {
            Some(tr) if tr.phase == TransitionPhase::End => Some(Figures::from(std::mem::take(&mut self.summary))),
            Some(_) => Some(Figures::from(m)),
            None => None,
        };
        // An inactive frame that leaves the lifecycle idle discards a pending onset: the next
        // event's summary starts afresh, exactly when the lifecycle's onset does.
        if !active && !self.lifecycle.is_active() {
            self.summary = Summary::default();
        }
        transition.zip(figures)
    }

    fn finish(&mut self, t: f64) -> Option<(Transition, Figures)> {
        let summary = std::mem::take(&mut self.summary);
        self.lifecycle.finish(t).map(|tr| (tr, Figures::from(summary)))
    }
}

/// One rule key of a zone. The order of a zone's keys is the order of its events (B10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Presence(ObjectClass),
    Loitering,
    Crowding,
    Running,
}

impl Key {
    fn kind(self) -> EventKind {
        match self {
            Key::Presence(_) => EventKind::Presence,
            Key::Loitering => EventKind::Loitering,
            Key::Crowding => EventKind::Crowding,
            Key::Running => EventKind::Running,
        }
    }

    fn subject(self) -> Option<&'static str> {
        match self {
            Key::Presence(class) => Some(class.as_str()),
            _ => None,
        }
    }

    /// The `attrs` of one transition (B4 to B8); `f` holds the frame's or the event's figures.
    fn attrs(self, f: Figures, zone: &RuleZone) -> Map<String, Value> {
        let mut attrs = Map::new();
        if let Key::Presence(class) = self {
            attrs.insert("class".into(), class.as_str().into());
        }
        attrs.insert("count".into(), f.count.into());
        if self != Key::Crowding {
            attrs.insert("tracks".into(), f.tracks.into());
        }
        match self {
            Key::Loitering => attrs.insert("longest_dwell_s".into(), round(f.value, 1).into()),
            Key::Crowding => attrs.insert("crowd_size".into(), zone.crowd_size.into()),
            Key::Running => attrs.insert("max_speed_heights".into(), round(f.value, 2).into()),
            Key::Presence(_) => None,
        };
        attrs
    }

    /// Whether the key's condition holds in this frame, and what the frame shows for it.
    /// `inside` and `people` are sorted by track id; `dwell` is up to date for this frame.
    fn measure(self, t: f64, view: &ZoneView, params: &RulesParams) -> (bool, Measure) {
        match self {
            // B4: at least one object of the class in the zone.
            Key::Presence(class) => {
                let of_class: Vec<Located> = view.inside.iter().copied().filter(|o| o.obj.class == class).collect();
                (!of_class.is_empty(), Measure::of(&of_class, 0.0))
            }
            // B5: at least one person in the zone whose dwell has reached the zone's time.
            Key::Loitering => {
                let loiter = view.zone.loiter_time.as_secs_f64();
                let mut loiterers = Vec::new();
                let mut longest: f64 = 0.0;
                for p in &view.people {
                    let dwell = view.dwell.get(&p.obj.track).map_or(0.0, |d| t - d.since);
                    if dwell + EPS >= loiter {
                        loiterers.push(*p);
                        longest = longest.max(dwell);
                    }
                }
                (!loiterers.is_empty(), Measure::of(&loiterers, longest))
            }
            // B6: more people in the zone than its crowd size.
            Key::Crowding => {
                let crowded = view.people.len() as u64 > u64::from(view.zone.crowd_size);
                (crowded, Measure::of(&view.people, 0.0))
            }
            // B7, B8: enough runners. A track the detector missed moves at its old velocity, and a
            // young track's velocity is one or two noisy box displacements, so neither is evidence
            // of running. A track predicted between two detector runs counts: the condition must
            // hold on every frame for `running_time`.
            Key::Running => {
                let min_age = RUNNING_MIN_AGE.as_secs_f64();
                let runners: Vec<Located> = view
                    .people
                    .iter()
                    .copied()
                    .filter(|p| {
                        !p.obj.missed && p.obj.age_s + EPS >= min_age && p.obj.speed_heights >= params.running_speed
                    })
                    .collect();
                let fastest = runners.iter().map(|p| p.obj.speed_heights).fold(0.0, f64::max);
                // At least one runner, whatever `running_people` says: nobody running is not running.
                let running = !runners.is_empty() && runners.len() as u64 >= u64::from(params.running_people);
                (running, Measure::of(&runners, fastest))
            }
        }
    }
}

/// What one zone sees in one frame.
struct ZoneView<'z, 'o> {
    zone: &'z RuleZone,
    dwell: &'z BTreeMap<u64, Dwell>,
    /// Objects whose anchor is in the zone, by track id.
    inside: Vec<Located<'o>>,
    /// The people among them.
    people: Vec<Located<'o>>,
}

/// The rules of one zone.
#[derive(Debug, Clone)]
struct ZoneRules {
    zone: RuleZone,
    /// Presence per class in `ObjectClass::ALL` order, then loitering, crowding, running (B10).
    rules: Vec<(Key, Rule)>,
    /// Per person track (B5).
    dwell: BTreeMap<u64, Dwell>,
}

impl ZoneRules {
    fn new(zone: RuleZone, params: &RulesParams) -> ZoneRules {
        let ev = params.events;
        // Each presence class once, in `ObjectClass::ALL` order, whatever order the config gave.
        let mut rules: Vec<(Key, Rule)> = ObjectClass::ALL
            .into_iter()
            .filter(|c| params.presence_classes.contains(c))
            .map(|c| (Key::Presence(c), Rule::new(ev)))
            .collect();
        // B5: a loiterer is reported as soon as the dwell reaches the zone's time; the dwell is
        // itself the debounce, so start_after would only delay it further.
        rules.push((Key::Loitering, Rule::new(LifecycleParams { start_after: Duration::ZERO, ..ev })));
        rules.push((Key::Crowding, Rule::new(LifecycleParams { start_after: zone.crowd_time, ..ev })));
        rules.push((Key::Running, Rule::new(LifecycleParams { start_after: params.running_time, ..ev })));
        ZoneRules { zone, rules, dwell: BTreeMap::new() }
    }

    /// B1: an object is in the zone when its anchor is.
    fn contains(&self, (x, y): (f64, f64)) -> bool {
        self.zone.polygon.as_ref().is_none_or(|p| p.contains(x, y))
    }

    fn event(&self, key: Key, transition: Transition, f: Figures) -> RuleEvent {
        RuleEvent {
            kind: key.kind(),
            zone: self.zone.name.clone(),
            subject: key.subject().map(str::to_owned),
            transition,
            attrs: key.attrs(f, &self.zone),
        }
    }

    fn update(&mut self, t: f64, objects: &[Located], params: &RulesParams, out: &mut Vec<RuleEvent>) {
        let inside: Vec<Located> = objects.iter().copied().filter(|o| self.contains(o.anchor)).collect();
        let people: Vec<Located> = inside.iter().copied().filter(Located::is_person).collect();
        // B5: a dwell starts, or continues, on every frame the person is in the zone. `forget` has
        // already dropped the dwells whose grace ran out, so any dwell still here continues.
        for p in &people {
            self.dwell.entry(p.obj.track).or_insert(Dwell { since: t, last_in: t }).last_in = t;
        }
        let mut transitions = Vec::new();
        let view = ZoneView { zone: &self.zone, dwell: &self.dwell, inside, people };
        for (key, rule) in &mut self.rules {
            let (active, m) = key.measure(t, &view, params);
            if let Some((tr, f)) = rule.observe(t, active, &m) {
                transitions.push((*key, tr, f));
            }
        }
        out.extend(transitions.into_iter().map(|(key, tr, f)| self.event(key, tr, f)));
    }

    /// L5 for every key of the zone, in the order of `update` (B10); the dwells go too (B11).
    fn finish(&mut self, t: f64, out: &mut Vec<RuleEvent>) {
        let ends: Vec<_> =
            self.rules.iter_mut().filter_map(|(key, rule)| rule.finish(t).map(|(tr, f)| (*key, tr, f))).collect();
        out.extend(ends.into_iter().map(|(key, tr, f)| self.event(key, tr, f)));
        self.dwell.clear();
    }

    /// `kind[:subject][@zone]` of every open event.
    fn open_events(&self, names: &mut Vec<String>) {
        let at = self.zone.name.as_deref().map(|n| format!("@{n}")).unwrap_or_default();
        for (key, rule) in &self.rules {
            if rule.lifecycle.is_active() {
                let subject = key.subject().map(|s| format!(":{s}")).unwrap_or_default();
                names.push(format!("{}{subject}{at}", key.kind().as_str()));
            }
        }
    }
}

/// The last position of a track that was clearly on one side of a line (B9).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Settled {
    /// Right of a→b (positive signed distance).
    right: bool,
    anchor: (f64, f64),
}

/// One line's per-track sides and its crossing counter.
#[derive(Debug, Clone)]
struct LineCounter {
    rule: LineRule,
    /// `None` when the endpoints are not finite or coincide: such a line never counts (B12).
    length: Option<f64>,
    settled: BTreeMap<u64, Settled>,
    /// Number of the next crossing of this line, from 0.
    serial: u64,
}

impl LineCounter {
    fn new(rule: LineRule) -> LineCounter {
        let (dx, dy) = (rule.b.0 - rule.a.0, rule.b.1 - rule.a.1);
        let length = dx.hypot(dy);
        let usable = [rule.a.0, rule.a.1, rule.b.0, rule.b.1].iter().all(|v| v.is_finite()) && length > 1e-9;
        LineCounter { rule, length: usable.then_some(length), settled: BTreeMap::new(), serial: 0 }
    }

    fn update(&mut self, t: f64, objects: &[Located], out: &mut Vec<RuleEvent>) {
        let Some(length) = self.length else { return };
        let (a, b) = (self.rule.a, self.rule.b);
        for o in objects {
            // A coasting box is where the tracker guesses the object is; a guess must not count.
            if o.obj.coasting || !self.rule.classes.contains(&o.obj.class) {
                continue;
            }
            let p = o.anchor;
            // Signed distance from the infinite line; positive is right of a→b on the image (y down).
            let s = cross(a, b, p) / length;
            // Too close to call: jitter here must neither count nor reset the side. (A non-finite s,
            // from huge coordinates that overflow, says nothing either.)
            if !s.is_finite() || s.abs() < LINE_MARGIN {
                continue;
            }
            let now = Settled { right: s > 0.0, anchor: p };
            if let Some(before) = self.settled.insert(o.obj.track, now)
                && before.right != now.right
                && segments_meet(before.anchor, p, a, b)
            {
                let direction = if now.right { "left_to_right" } else { "right_to_left" };
                let bbox = clip_box(&o.obj.bbox);
                let transition = Transition {
                    phase: TransitionPhase::Instant,
                    onset: t,
                    last_active: t,
                    at: t,
                    bbox: Some(bbox),
                    area: bbox[2] * bbox[3],
                    serial: self.serial,
                };
                self.serial += 1;
                let mut attrs = Map::new();
                attrs.insert("track".into(), o.obj.track.into());
                attrs.insert("class".into(), o.obj.class.as_str().into());
                attrs.insert("direction".into(), direction.into());
                out.push(RuleEvent {
                    kind: EventKind::LineCrossed,
                    zone: Some(self.rule.name.clone()),
                    subject: Some(direction.to_owned()),
                    transition,
                    attrs,
                });
            }
        }
    }
}

/// cross(b − a, p − a): twice the signed area of (a, b, p).
fn cross(a: (f64, f64), b: (f64, f64), p: (f64, f64)) -> f64 {
    (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0)
}

/// Whether segments p1–p2 and q1–q2 intersect, properly or by touching.
fn segments_meet(p1: (f64, f64), p2: (f64, f64), q1: (f64, f64), q2: (f64, f64)) -> bool {
    const TOL: f64 = 1e-12;
    let (d1, d2) = (cross(q1, q2, p1), cross(q1, q2, p2));
    let (d3, d4) = (cross(p1, p2, q1), cross(p1, p2, q2));
    let straddle = |u: f64, v: f64| (u > TOL && v < -TOL) || (u < -TOL && v > TOL);
    if straddle(d1, d2) && straddle(d3, d4) {
        return true;
    }
    // Touching: an endpoint lies on the other segment (within its bounding box, on its line).
    let within = |s: (f64, f64), e: (f64, f64), p: (f64, f64)| {
        p.0 >= s.0.min(e.0) - TOL && p.0 <= s.0.max(e.0) + TOL && p.1 >= s.1.min(e.1) - TOL && p.1 <= s.1.max(e.1) + TOL
    };
    (d1.abs() <= TOL && within(q1, q2, p1))
        || (d2.abs() <= TOL && within(q1, q2, p2))
        || (d3.abs() <= TOL && within(p1, p2, q1))
        || (d4.abs() <= TOL && within(p1, p2, q2))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use ObjectClass::{Bicycle, Car, Person};
    use TransitionPhase::{End, Instant, Start, Update};

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn params() -> RulesParams {
        RulesParams {
            presence_classes: vec![Car, Person],
            running_speed: 1.0,
            running_people: 2,
            running_time: secs(1.0),
            events: LifecycleParams { start_after: secs(0.5), update_interval: secs(2.0), end_after: secs(1.0) },
        }
    }

    /// The left half of the frame.
    const LEFT: [[f64; 2]; 4] = [[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]];

    fn zone(name: &str, points: &[[f64; 2]]) -> RuleZone {
        RuleZone {
            name: Some(name.into()),
            polygon: Some(Polygon::new(points.to_vec()).expect("test polygon")),
            loiter_time: secs(5.0),
            crowd_size: 2,
            crowd_time: secs(1.0),
        }
    }

    fn whole_frame() -> RuleZone {
        RuleZone { name: None, polygon: None, loiter_time: secs(5.0), crowd_size: 2, crowd_time: secs(1.0) }
    }

    /// An object standing at `(x, y)` (its anchor): a box 0.04 wide and 0.2 high, walking slowly.
    fn obj(track: u64, class: ObjectClass, x: f64, y: f64) -> RuleObject {
        RuleObject {
            track,
            class,
            bbox: [x - 0.02, y - 0.2, 0.04, 0.2],
            coasting: false,
            missed: false,
            speed: 0.05,
            speed_heights: 0.25,
            age_s: 10.0,
        }
    }

    fn person(track: u64, x: f64, y: f64) -> RuleObject {
        obj(track, Person, x, y)
    }

    /// A person in the left half (inside `LEFT`).
    fn inside(track: u64) -> RuleObject {
        person(track, 0.25, 0.8)
    }

    /// A person in the right half (outside `LEFT`).
    fn outside(track: u64) -> RuleObject {
        person(track, 0.75, 0.8)
    }

    /// Runs frames at 10 fps from 0 s for `seconds`; `scene(t)` gives each frame's objects.
    fn run(engine: &mut RuleEngine, seconds: u32, scene: impl Fn(f64) -> Vec<RuleObject>) -> Vec<RuleEvent> {
        let mut out = Vec::new();
        for i in 0..seconds * 10 {
            let t = f64::from(i) / 10.0;
            out.extend(engine.update(t, &scene(t)));
        }
        out
    }

    /// Runs explicit frames, frame `i` at `i / 10` s.
    fn run_frames(engine: &mut RuleEngine, frames: &[Vec<RuleObject>]) -> Vec<RuleEvent> {
        let mut out = Vec::new();
        for (i, objects) in frames.iter().enumerate() {
            out.extend(engine.update(i as f64 / 10.0, objects));
        }
        out
    }

    fn during(t: f64, from: f64, to: f64) -> bool {
        (from..to).contains(&t)
    }

    /// (phase, at, attrs) of the events of one kind.
    fn of_kind(events: &[RuleEvent], kind: EventKind) -> Vec<(TransitionPhase, f64, Value)> {
        events
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| (e.transition.phase, round(e.transition.at, 3), Value::Object(e.attrs.clone())))
            .collect()
    }

    type Scene = Box<dyn Fn(f64) -> Vec<RuleObject>>;

    #[test]
    fn presence_table() {
        // (what, scene, expected (phase, at, onset, attrs)); zone "left", start_after 0.5 s,
        // update_interval 2 s, end_after 1 s.
        type Case = (&'static str, Scene, Vec<(TransitionPhase, f64, f64, Value)>);
        let p = |count: u64, tracks: &[u64]| json!({"class": "person", "count": count, "tracks": tracks});
        let cases: Vec<Case> = vec![
            ("nobody, or only outside the zone", Box::new(|_| vec![outside(9)]), vec![]),
            (
                "a blip shorter than start_after is ignored",
                Box::new(|t| if during(t, 1.0, 1.3) { vec![inside(1)] } else { vec![] }),
                vec![],
            ),
            (
                "start after start_after, updates every 2 s at most, end after end_after with the peak and all tracks",
                Box::new(|t| {
                    let mut v = vec![outside(9)];
                    if during(t, 1.0, 6.0) {
                        v.push(inside(1));
                    }
                    if during(t, 2.0, 3.0) {
                        v.push(inside(2));
                    }
                    if during(t, 5.0, 6.0) {
                        v.extend([inside(3), inside(4)]);
                    }
                    v
                }),
                vec![
                    (Start, 1.5, 1.0, p(1, &[1])),
                    (Update, 3.5, 1.0, p(1, &[1])),
                    (Update, 5.5, 1.0, p(3, &[1, 3, 4])),
                    (End, 6.9, 1.0, p(3, &[1, 2, 3, 4])),
                ],
            ),
            (
                "a gap shorter than end_after does not split the event",
                Box::new(|t| if during(t, 1.0, 2.0) || during(t, 2.5, 3.0) { vec![inside(1)] } else { vec![] }),
                vec![(Start, 1.5, 1.0, p(1, &[1])), (End, 3.9, 1.0, p(1, &[1]))],
            ),
            (
                "an onset that lapses leaves nothing in the next event's summary",
                Box::new(|t| {
                    if during(t, 1.0, 1.2) {
                        vec![inside(5)]
                    } else if during(t, 2.0, 3.0) {
                        vec![inside(6)]
                    } else {
                        vec![]
                    }
                }),
                vec![(Start, 2.5, 2.0, p(1, &[6])), (End, 3.9, 2.0, p(1, &[6]))],
            ),
        ];
        for (what, scene, want) in cases {
            let mut e = RuleEngine::new(params(), vec![zone("left", &LEFT)], vec![]);
            let got: Vec<_> = run(&mut e, 10, scene)
                .into_iter()
                .filter(|ev| ev.kind == EventKind::Presence)
                .inspect(|ev| {
                    assert_eq!(
                        (ev.kind, ev.zone.as_deref(), ev.subject.as_deref()),
                        (EventKind::Presence, Some("left"), Some("person")),
                        "{what}"
                    )
                })
                .map(|ev| (ev.transition.phase, ev.transition.at, ev.transition.onset, Value::Object(ev.attrs)))
                .collect();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn presence_is_per_class() {
        // A car opens car presence only; a bicycle is not in presence_classes and opens nothing.
        let mut e = RuleEngine::new(params(), vec![zone("left", &LEFT)], vec![]);
        let events = run(&mut e, 5, |t| {
            if during(t, 0.0, 3.0) { vec![obj(1, Car, 0.25, 0.8), obj(2, Bicycle, 0.3, 0.8)] } else { vec![] }
        });
        let got: Vec<_> =
            events.iter().map(|e| (e.kind, e.subject.as_deref(), e.transition.phase, e.transition.at)).collect();
        assert_eq!(
            got,
            vec![
                (EventKind::Presence, Some("car"), Start, 0.5),
                (EventKind::Presence, Some("car"), Update, 2.5),
                (EventKind::Presence, Some("car"), End, 3.9)
            ]
        );
        assert_eq!(Value::Object(events[0].attrs.clone()), json!({"class": "car", "count": 1, "tracks": [1]}));
    }

    #[test]
    fn zones_hold_objects_by_their_anchor_and_the_whole_frame_zone_holds_all() {
        // Person 1's box spans 0.30..0.60 but its feet are at 0.45: in "left". Person 2's box
        // starts inside "left" (0.35) but its feet are at 0.55: out. The whole frame has both.
        let p1 = RuleObject { bbox: [0.30, 0.5, 0.30, 0.3], ..person(1, 0.0, 0.0) };
        let p2 = RuleObject { bbox: [0.35, 0.6, 0.40, 0.3], ..person(2, 0.0, 0.0) };
        let mut e = RuleEngine::new(params(), vec![zone("left", &LEFT), whole_frame()], vec![]);
        let events = run(&mut e, 1, |_| vec![p2, p1]);
        let got: Vec<_> = events
            .iter()
            .map(|e| (e.zone.as_deref(), e.transition.phase, e.transition.at, Value::Object(e.attrs.clone())))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("left"), Start, 0.5, json!({"class": "person", "count": 1, "tracks": [1]})),
                (None, Start, 0.5, json!({"class": "person", "count": 2, "tracks": [1, 2]})),
            ]
        );
        // The whole-frame box is the union of both, its area that box's.
        let b = events[1].transition.bbox.expect("a box");
        let want = [0.30, 0.5, 0.45, 0.4];
        assert!(b.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-12), "{b:?}");
        assert!((events[1].transition.area - 0.45 * 0.4).abs() < 1e-12);
    }

    #[test]
    fn loitering_table() {
        // Zone "left", loiter_time 5 s, update_interval 2 s, end_after 1 s.
        type Case = (&'static str, Scene, Vec<(TransitionPhase, f64, Value)>);
        let l = |count: u64, tracks: &[u64], longest: f64| json!({"count": count, "tracks": tracks, "longest_dwell_s": longest});
        let cases: Vec<Case> = vec![
            (
                "stays 0-12 s: one start when the dwell reaches 5 s, updates, one end",
                Box::new(|t| if t < 12.0 { vec![inside(1)] } else { vec![] }),
                vec![
                    (Start, 5.0, l(1, &[1], 5.0)),
                    (Update, 7.0, l(1, &[1], 7.0)),
                    (Update, 9.0, l(1, &[1], 9.0)),
                    (Update, 11.0, l(1, &[1], 11.0)),
                    (End, 12.9, l(1, &[1], 11.9)),
                ],
            ),
            (
                "a second loiterer: counted while there, and in the end's peak and tracks",
                Box::new(|t| {
                    let mut v = vec![];
                    if t < 12.0 {
                        v.push(inside(1));
                    }
                    if during(t, 3.0, 10.0) {
                        v.push(inside(2));
                    }
                    v
                }),
                vec![
                    (Start, 5.0, l(1, &[1], 5.0)),
                    (Update, 7.0, l(1, &[1], 7.0)),
                    (Update, 9.0, l(2, &[1, 2], 9.0)),
                    (Update, 11.0, l(1, &[1], 11.0)),
                    (End, 12.9, l(2, &[1, 2], 11.9)),
                ],
            ),
            (
                "steps out of the zone for 1.5 s: the dwell survives",
                Box::new(|t| {
                    if during(t, 2.0, 3.5) {
                        vec![outside(1)]
                    } else if t < 8.0 {
                        vec![inside(1)]
                    } else {
                        vec![]
                    }
                }),
                vec![(Start, 5.0, l(1, &[1], 5.0)), (Update, 7.0, l(1, &[1], 7.0)), (End, 8.9, l(1, &[1], 7.9))],
            ),
            (
                "hidden (not passed) for 1.5 s: the dwell survives",
                Box::new(|t| if during(t, 2.0, 3.5) || t >= 8.0 { vec![] } else { vec![inside(1)] }),
                vec![(Start, 5.0, l(1, &[1], 5.0)), (Update, 7.0, l(1, &[1], 7.0)), (End, 8.9, l(1, &[1], 7.9))],
            ),
            (
                "out for 2.5 s: the dwell is forgotten and starts again on return",
                Box::new(|t| {
                    if during(t, 2.0, 4.5) {
                        vec![outside(1)]
                    } else if t < 11.0 {
                        vec![inside(1)]
                    } else {
                        vec![]
                    }
                }),
                vec![(Start, 9.5, l(1, &[1], 5.0)), (End, 11.9, l(1, &[1], 6.4))],
            ),
            (
                "a car does not loiter",
                Box::new(|t| if t < 12.0 { vec![obj(1, Car, 0.25, 0.8)] } else { vec![] }),
                vec![],
            ),
        ];
        for (what, scene, want) in cases {
            let mut e = RuleEngine::new(params(), vec![zone("left", &LEFT)], vec![]);
            assert_eq!(of_kind(&run(&mut e, 14, scene), EventKind::Loitering), want, "{what}");
        }
    }

    #[test]
    fn crowding_table() {
        // Zone "left", crowd_size 2, crowd_time 1 s, update_interval 2 s, end_after 1 s.
        let c = |count: u64| json!({"count": count, "crowd_size": 2});
        let three = || vec![inside(1), inside(2), inside(3)];
        type Case = (&'static str, Scene, Vec<(TransitionPhase, f64, Value)>);
        let cases: Vec<Case> = vec![
            ("two people are not more than crowd_size", Box::new(|_| vec![inside(1), inside(2)]), vec![]),
            (
                "three people for 0.9 s: shorter than crowd_time",
                Box::new(move |t| if during(t, 1.0, 1.9) { three() } else { vec![] }),
                vec![],
            ),
            (
                "three people 1-5 s, a fourth 2.5-3 s: start after crowd_time, end after end_after with the peak",
                Box::new(move |t| {
                    let mut v = if during(t, 1.0, 5.0) { three() } else { vec![] };
                    if during(t, 2.5, 3.0) {
                        v.push(inside(4));
                    }
                    v
                }),
                vec![(Start, 2.0, c(3)), (Update, 4.0, c(3)), (End, 5.9, c(4))],
            ),
            ("three people outside the zone", Box::new(|_| vec![outside(1), outside(2), outside(3)]), vec![]),
            ("two people and a car", Box::new(|_| vec![inside(1), inside(2), obj(3, Car, 0.25, 0.8)]), vec![]),
        ];
        for (what, scene, want) in cases {
            let mut e = RuleEngine::new(params(), vec![zone("left", &LEFT)], vec![]);
            assert_eq!(of_kind(&run(&mut e, 8, scene), EventKind::Crowding), want, "{what}");
        }
    }

    #[test]
    fn running_table() {
        // Whole frame, running_people 2, running_speed 1.0 box heights/s, running_time 1 s.
        let runner = |track: u64, speed_heights: f64| RuleObject { speed_heights, speed: 0.3, ..inside(track) };
        type Case = (&'static str, Scene, Vec<(TransitionPhase, f64, Value)>);
        let cases: Vec<Case> = vec![
            (
                "two runners 1-4 s: start after running_time, end after end_after",
                Box::new(move |t| if during(t, 1.0, 4.0) { vec![runner(1, 1.5), runner(2, 2.0)] } else { vec![] }),
                vec![
                    (Start, 2.0, json!({"count": 2, "tracks": [1, 2], "max_speed_heights": 2.0})),
                    (End, 4.9, json!({"count": 2, "tracks": [1, 2], "max_speed_heights": 2.0})),
                ],
            ),
            (
                "exactly running_speed counts; a third runner joins",
                Box::new(move |t| {
                    let mut v = vec![runner(1, 1.0), runner(2, 1.0)];
                    if t >= 2.5 {
                        v.push(runner(3, 1.234));
                    }
                    v
                }),
                vec![
                    (Start, 1.0, json!({"count": 2, "tracks": [1, 2], "max_speed_heights": 1.0})),
                    (Update, 3.0, json!({"count": 3, "tracks": [1, 2, 3], "max_speed_heights": 1.23})),
                    (Update, 5.0, json!({"count": 3, "tracks": [1, 2, 3], "max_speed_heights": 1.23})),
                ],
            ),
            ("one runner is not enough", Box::new(move |_| vec![runner(1, 3.0), inside(2)]), vec![]),
            (
                "a runner the detector missed does not count",
                Box::new(move |_| vec![runner(1, 3.0), RuleObject { coasting: true, missed: true, ..runner(2, 3.0) }]),
                vec![],
            ),
            (
                "a track younger than 0.5 s does not count",
                Box::new(move |_| vec![runner(1, 3.0), RuleObject { age_s: 0.4, ..runner(2, 3.0) }]),
                vec![],
            ),
            (
                "fast across the frame but slow in box heights (near the camera) is not running",
                Box::new(move |_| {
                    vec![RuleObject { speed: 0.9, ..runner(1, 0.5) }, RuleObject { speed: 0.9, ..runner(2, 0.5) }]
                }),
                vec![],
            ),
        ];
        for (what, scene, want) in cases {
            let mut e = RuleEngine::new(params(), vec![whole_frame()], vec![]);
            assert_eq!(of_kind(&run(&mut e, 6, scene), EventKind::Running), want, "{what}");
        }
    }

    fn gate() -> LineRule {
        LineRule { name: "gate".into(), a: (0.2, 0.5), b: (0.8, 0.5), classes: vec![Person] }
    }

    /// One object per frame at `x` and each of `ys`.
    fn path(make: impl Fn(f64, f64) -> RuleObject, x: f64, ys: &[f64]) -> Vec<Vec<RuleObject>> {
        ys.iter().map(|&y| vec![make(x, y)]).collect()
    }

    /// y from 0.3 to 0.7 (or back) in steps of 0.02.
    fn walk(down: bool) -> Vec<f64> {
        (0..=20).map(|i| if down { 0.3 + 0.02 * f64::from(i) } else { 0.7 - 0.02 * f64::from(i) }).collect()
    }

    #[test]
    fn line_crossing_table() {
        // "gate" runs left to right across the middle of the frame, from x 0.2 to 0.8; below it is
        // its right side (y points down), so walking down is left_to_right.
        let p = |x, y| person(1, x, y);
        let jitter = vec![0.40, 0.45, 0.495, 0.505, 0.495, 0.505, 0.495, 0.52, 0.55, 0.505, 0.495, 0.505, 0.6];
        // (what, frames, expected (direction, at))
        type Case = (&'static str, Vec<Vec<RuleObject>>, Vec<(&'static str, f64)>);
        let cases: Vec<Case> = vec![
            ("walking down through the middle", path(p, 0.5, &walk(true)), vec![("left_to_right", 1.1)]),
            ("walking up through the middle", path(p, 0.5, &walk(false)), vec![("right_to_left", 1.1)]),
            ("passing beyond the end of the segment", path(p, 0.9, &walk(true)), vec![]),
            ("passing just before its start", path(p, 0.19, &walk(true)), vec![]),
            ("through an endpoint (touching)", path(p, 0.2, &walk(true)), vec![("left_to_right", 1.1)]),
            ("a class the line does not count", path(|x, y| obj(1, Car, x, y), 0.5, &walk(true)), vec![]),
            (
                "a coasting object",
                path(|x, y| RuleObject { coasting: true, ..person(1, x, y) }, 0.5, &walk(true)),
                vec![],
            ),
            (
                "jitter within the margin around the line counts once",
                path(p, 0.5, &jitter),
                vec![("left_to_right", 0.7)],
            ),
            ("up to the line and back", path(p, 0.5, &[0.4, 0.45, 0.495, 0.505, 0.495, 0.45, 0.4]), vec![]),
            (
                "across and back: two crossings",
                path(p, 0.5, &[0.4, 0.45, 0.55, 0.6, 0.55, 0.45]),
                vec![("left_to_right", 0.2), ("right_to_left", 0.5)],
            ),
        ];
        for (what, frames, want) in cases {
            let mut e = RuleEngine::new(params(), vec![], vec![gate()]);
            let got: Vec<_> = run_frames(&mut e, &frames)
                .iter()
                .map(|e| (e.subject.clone().unwrap_or_default(), e.transition.at))
                .collect();
            let want: Vec<_> = want.into_iter().map(|(d, at)| (d.to_owned(), at)).collect();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn line_crossings_are_instant_numbered_per_line_and_relative_to_the_drawing() {
        // "etag" is "gate" drawn the other way: the same walk is the other direction on it.
        let etag = LineRule { name: "etag".into(), a: (0.8, 0.5), b: (0.2, 0.5), classes: vec![Person] };
        let mut e = RuleEngine::new(params(), vec![], vec![gate(), etag]);
        let frames = vec![
            vec![person(1, 0.5, 0.4), person(2, 0.3, 0.4)],
            vec![person(1, 0.5, 0.6), person(2, 0.3, 0.4)],
            vec![person(1, 0.5, 0.6), person(2, 0.3, 0.6)],
            vec![person(1, 0.5, 0.4), person(2, 0.3, 0.6)],
        ];
        let events = run_frames(&mut e, &frames);
        let got: Vec<_> = events
            .iter()
            .map(|e| (e.zone.as_deref().unwrap_or(""), e.subject.as_deref().unwrap_or(""), e.transition.serial))
            .collect();
        assert_eq!(
            got,
            vec![
                ("gate", "left_to_right", 0),
                ("etag", "right_to_left", 0),
                ("gate", "left_to_right", 1),
                ("etag", "right_to_left", 1),
                ("gate", "right_to_left", 2),
                ("etag", "left_to_right", 2),
            ]
        );
        let first = &events[0];
        assert_eq!(first.kind, EventKind::LineCrossed);
        let bbox = person(1, 0.5, 0.6).bbox;
        assert_eq!(
            first.transition,
            Transition {
                phase: Instant,
                onset: 0.1,
                last_active: 0.1,
                at: 0.1,
                bbox: Some(bbox),
                area: bbox[2] * bbox[3],
                serial: 0
            }
        );
        assert_eq!(
            Value::Object(first.attrs.clone()),
            json!({"track": 1, "class": "person", "direction": "left_to_right"})
        );
        assert!(e.open_events().is_empty(), "a crossing is never open");
    }

    #[test]
    fn a_crossing_during_an_occlusion_counts_when_seen_again_unless_forgotten() {
        // Settled above the line at 0-0.2 s, then gap frames, then seen below the line.
        let above = person(1, 0.5, 0.4);
        let below = person(1, 0.5, 0.6);
        let cases: Vec<(&str, Vec<RuleObject>, usize, usize)> = vec![
            ("not passed for 3 s", vec![], 30, 1),
            ("coasting across for 3 s", vec![RuleObject { coasting: true, ..below }], 30, 1),
            ("not passed for 6 s: the side is forgotten", vec![], 60, 0),
        ];
        for (what, gap, frames, want) in cases {
            let mut e = RuleEngine::new(params(), vec![], vec![gate()]);
            let mut seq = vec![vec![above]; 3];
            seq.extend(std::iter::repeat_n(gap, frames));
            seq.push(vec![below]);
            let crossings = run_frames(&mut e, &seq).len();
            assert_eq!(crossings, want, "{what}");
        }
    }

    #[test]
    fn per_track_state_is_forgotten() {
        let mut e = RuleEngine::new(params(), vec![zone("left", &LEFT)], vec![gate()]);
        run(&mut e, 2, |_| (1..=20).map(|id| person(id, 0.1 + 0.01 * id as f64, 0.4)).collect());
        assert_eq!((e.last_seen.len(), e.lines[0].settled.len(), e.zones[0].dwell.len()), (20, 20, 20));
        // 2.1 s without them: dwells are gone (LOITER_GRACE); 5.1 s: everything is.
        e.update(4.1, &[]);
        assert_eq!((e.last_seen.len(), e.lines[0].settled.len(), e.zones[0].dwell.len()), (20, 20, 0));
        e.update(7.0, &[]);
        assert_eq!((e.last_seen.len(), e.lines[0].settled.len(), e.zones[0].dwell.len()), (0, 0, 0));
    }

    #[test]
    fn track_lists_are_capped() {
        let mut e = RuleEngine::new(params(), vec![whole_frame()], vec![]);
        // 60 people at once for 1 s, then 30 more one after another.
        let events = run(&mut e, 6, |t| {
            if t < 1.0 {
                (1..=60).map(inside).collect()
            } else if t < 4.0 {
                vec![inside(61 + (t * 10.0) as u64 % 30)]
            } else {
                vec![]
            }
        });
        let presence: Vec<_> = events.iter().filter(|e| e.kind == EventKind::Presence).collect();
        let first_fifty: Vec<u64> = (1..=50).collect();
        assert_eq!(presence[0].transition.phase, Start);
        assert_eq!(presence[0].attrs["count"], json!(60));
        assert_eq!(presence[0].attrs["tracks"], json!(first_fifty));
        let end = presence.last().expect("an end");
        assert_eq!(end.transition.phase, End);
        assert_eq!((end.attrs["count"].clone(), end.attrs["tracks"].clone()), (json!(60), json!(first_fifty)));
    }

    #[test]
    fn finish_ends_open_events_and_serials_continue() {
        let mut e = RuleEngine::new(params(), vec![zone("left", &LEFT)], vec![]);
        run(&mut e, 6, |t| if during(t, 1.0, 2.0) { vec![inside(1), inside(2)] } else { vec![inside(1)] });
        assert_eq!(e.open_events(), vec!["presence:person@left", "loitering@left"]);
        let ends = e.finish(6.0);
        let got: Vec<_> = ends
            .iter()
            .map(|e| (e.kind, e.transition.phase, e.transition.last_active, e.transition.at, e.transition.serial))
            .collect();
        assert_eq!(got, vec![(EventKind::Presence, End, 5.9, 6.0, 0), (EventKind::Loitering, End, 5.9, 6.0, 0)]);
        assert_eq!(Value::Object(ends[0].attrs.clone()), json!({"class": "person", "count": 2, "tracks": [1, 2]}));
        assert_eq!(Value::Object(ends[1].attrs.clone()), json!({"count": 1, "tracks": [1], "longest_dwell_s": 5.9}));
        assert!(e.open_events().is_empty());
        assert!(e.finish(6.5).is_empty(), "nothing left to end");
        // Back at 7 s: presence is a new event (serial 1); the dwell was forgotten, so no loitering.
        let again: Vec<_> = (70..90).flat_map(|i| e.update(f64::from(i) / 10.0, &[inside(1)])).collect();
        let got: Vec<_> =
            again.iter().map(|e| (e.kind, e.transition.phase, e.transition.at, e.transition.serial)).collect();
        assert_eq!(got, vec![(EventKind::Presence, Start, 7.5, 1)]);
    }

    #[test]
    fn output_order_is_deterministic() {
        // Every rule fires at once: start_after, crowd_time, running_time and loiter_time are 0.
        let params = RulesParams {
            running_people: 1,
            running_time: Duration::ZERO,
            events: LifecycleParams { start_after: Duration::ZERO, ..params().events },
            ..params()
        };
        let eager =
            |z: RuleZone| RuleZone { loiter_time: Duration::ZERO, crowd_size: 0, crowd_time: Duration::ZERO, ..z };
        let zones = vec![eager(zone("a", &LEFT)), eager(whole_frame())];
        let line =
            |name: &str| LineRule { name: name.into(), a: (0.1, 0.5), b: (0.9, 0.5), classes: vec![Person, Car] };
        let at = |y: f64| {
            vec![obj(3, Car, 0.3, y), RuleObject { speed_heights: 2.0, ..person(2, 0.35, y) }, person(1, 0.25, y)]
        };
        let frames = vec![at(0.4), at(0.6)];
        let run_once = |frames: &[Vec<RuleObject>]| {
            let mut e = RuleEngine::new(params.clone(), zones.clone(), vec![line("l1"), line("l2")]);
            run_frames(&mut e, frames)
        };
        let events = run_once(&frames);
        let got: Vec<_> = events
            .iter()
            .map(|e| {
                let track = e.attrs.get("track").and_then(Value::as_u64);
                (e.kind.as_str(), e.zone.as_deref(), e.subject.as_deref(), track, e.transition.at)
            })
            .collect();
        let zone_starts = |z: Option<&'static str>| {
            vec![
                ("presence", z, Some("person"), None, 0.0),
                ("presence", z, Some("car"), None, 0.0),
                ("loitering", z, None, None, 0.0),
                ("crowding", z, None, None, 0.0),
                ("running", z, None, None, 0.0),
            ]
        };
        let crossings =
            |l: &'static str| (1..=3).map(move |id| ("line_crossed", Some(l), Some("left_to_right"), Some(id), 0.1));
        let want: Vec<_> = [zone_starts(Some("a")), zone_starts(None)]
            .concat()
            .into_iter()
            .chain(crossings("l1"))
            .chain(crossings("l2"))
            .collect();
        assert_eq!(got, want);
        // The same input in another object order, or a second time, gives the same output.
        let reversed: Vec<Vec<RuleObject>> = frames.iter().map(|f| f.iter().rev().copied().collect()).collect();
        assert_eq!(run_once(&reversed), events);
        assert_eq!(run_once(&frames), events);
    }

    #[test]
    fn non_finite_input_is_ignored() {
        let good = |t: f64| if t < 3.0 { vec![person(1, 0.5, 0.3 + 0.1 * t)] } else { vec![] };
        let with_bad = move |t: f64| {
            let mut v = good(t);
            v.extend([
                RuleObject { bbox: [f64::NAN, 0.5, 0.1, 0.1], ..person(2, 0.5, 0.3 + 0.1 * t) },
                RuleObject { bbox: [0.4, 0.5, f64::INFINITY, 0.1], ..person(3, 0.5, 0.3 + 0.1 * t) },
                RuleObject { bbox: [0.4, 0.5, -0.1, 0.1], ..person(4, 0.5, 0.3 + 0.1 * t) },
                RuleObject { speed: f64::NAN, ..person(5, 0.5, 0.3 + 0.1 * t) },
                RuleObject { speed_heights: f64::INFINITY, ..person(6, 0.5, 0.3 + 0.1 * t) },
                RuleObject { age_s: f64::NAN, ..person(7, 0.5, 0.3 + 0.1 * t) },
            ]);
            v
        };
        // Broken lines (a point, a NaN end) never count, and do not panic.
        let broken = |a, b| LineRule { name: "broken".into(), a, b, classes: vec![Person] };
        let lines = vec![gate(), broken((0.5, 0.5), (0.5, 0.5)), broken((0.2, 0.5), (f64::NAN, 0.5))];
        let engine = || RuleEngine::new(params(), vec![whole_frame(), zone("left", &LEFT)], lines.clone());
        let (mut clean, mut dirty) = (engine(), engine());
        let want = run(&mut clean, 5, good);
        let mut got = Vec::new();
        for i in 0..50 {
            let t = f64::from(i) / 10.0;
            // A frame with no usable time changes nothing.
            assert!(dirty.update(f64::NAN, &with_bad(t)).is_empty());
            got.extend(dirty.update(t, &with_bad(t)));
        }
        assert_eq!(got, want);
        assert!(want.iter().any(|e| e.kind == EventKind::LineCrossed), "the good person does cross the gate");
        assert!(want.iter().any(|e| e.kind == EventKind::Presence));
        // finish with no usable time ends at the last frame's time.
        dirty.update(5.0, &[person(1, 0.5, 0.8)]);
        dirty.update(5.5, &[person(1, 0.5, 0.8)]);
        let ends = dirty.finish(f64::NAN);
        assert!(!ends.is_empty() && ends.iter().all(|e| e.transition.at == 5.5), "{ends:?}");
    }
}
