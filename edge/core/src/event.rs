//! The event contract: one JSON object per message on `<prefix>/events`. Schema:
//! `edge/docs/ref/event.schema.json`; semantics: `edge/docs/design/events.md`.
//! No image bytes and no identity fields, ever: the struct has no field that could hold them.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::geometry::BBox;

pub const EVENT_VERSION: u32 = 1;

/// What happened. A closed set; each kind maps to an ONVIF topic (see `onvif_topic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Motion inside a zone (or anywhere, with no zones configured).
    Motion,
    /// The camera stopped delivering frames (disconnected, stalled, undecodable).
    SignalLost,
    /// Most of the picture is black: lens covered or sprayed, lights out beyond night.
    TooDark,
    /// Most of the picture is saturated: a flashlight or laser into the lens.
    TooBright,
    /// The picture lost most of its commissioned sharpness: focus turned, lens smeared or wet.
    TooBlurry,
    /// The scene's static structure no longer matches the commissioned reference: camera turned
    /// or knocked.
    SceneChanged,
    /// The enclosure's tamper switch reports the housing open.
    HousingOpened,
    /// Objects of one class (`attrs.class`) are inside a zone.
    Presence,
    /// A tracked object crossed a line (`zone` is the line's name); a single `instant` message.
    LineCrossed,
    /// A person has stayed in a zone longer than the zone's loitering time.
    Loitering,
    /// More people than the zone's crowd size have been in it for longer than the crowd time.
    Crowding,
    /// Several people in a zone move at running speed at once: a crude cue for a fight, panic or
    /// sudden dispersal.
    Running,
    /// The object detector failed, or took longer than `redact.max_staleness` per run: people
    /// detection is not trustworthy, and every picture leaving the box is masked whole until it
    /// recovers (edge/docs/design/privacy.md, D5).
    DetectorStalled,
    /// The recording ring buffer cannot write (disk full with only held footage left, or a storage
    /// error): recording is paused; analysis and events go on (edge/docs/design/ring-buffer.md, F7).
    StorageFailed,
    /// The durable outbox overflowed (or messages outlived `mqtt.outbox_max_age` during an outage):
    /// the `seq` ranges in `attrs.ranges` were dropped unsent, so a consumer can tell loss from a
    /// gap in transit (edge/docs/design/delivery.md). A single `instant` message.
    EventsDropped,
    /// The box has not reached its MQTT broker for longer than `mqtt.unreachable_alarm`: the
    /// alarm is committed to the outbox like any event, so the police see when and how long the
    /// box was cut off once the link returns (edge/docs/design/delivery.md).
    BrokerUnreachable,
    /// The wall clock moved against the monotonic clock by more than 2 s between two checks a
    /// second apart (an NTP step, a manual change, an RTC reset): times of messages before and
    /// after it are not comparable across the jump. A single `instant` message; `attrs.jump_s`
    /// is the step in seconds (negative: backwards).
    ClockJumped,
}

impl EventKind {
    pub const ALL: &'static [EventKind] = &[
        EventKind::Motion,
        EventKind::SignalLost,
        EventKind::TooDark,
        EventKind::TooBright,
        EventKind::TooBlurry,
        EventKind::SceneChanged,
        EventKind::HousingOpened,
        EventKind::Presence,
        EventKind::LineCrossed,
        EventKind::Loitering,
        EventKind::Crowding,
        EventKind::Running,
        EventKind::DetectorStalled,
        EventKind::StorageFailed,
        EventKind::EventsDropped,
        EventKind::BrokerUnreachable,
        EventKind::ClockJumped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Motion => "motion",
            EventKind::SignalLost => "signal_lost",
            EventKind::TooDark => "too_dark",
            EventKind::TooBright => "too_bright",
            EventKind::TooBlurry => "too_blurry",
            EventKind::SceneChanged => "scene_changed",
            EventKind::HousingOpened => "housing_opened",
            EventKind::Presence => "presence",
            EventKind::LineCrossed => "line_crossed",
            EventKind::Loitering => "loitering",
            EventKind::Crowding => "crowding",
            EventKind::Running => "running",
            EventKind::DetectorStalled => "detector_stalled",
            EventKind::StorageFailed => "storage_failed",
            EventKind::EventsDropped => "events_dropped",
            EventKind::BrokerUnreachable => "broker_unreachable",
            EventKind::ClockJumped => "clock_jumped",
        }
    }

    /// The ONVIF event topic this kind corresponds to (namespace prefix `tns1:` dropped).
    pub fn onvif_topic(self) -> &'static str {
        match self {
            EventKind::Motion => "VideoSource/MotionAlarm",
            EventKind::SignalLost => "VideoSource/SignalLoss",
            EventKind::TooDark => "VideoSource/ImageTooDark",
            EventKind::TooBright => "VideoSource/ImageTooBright",
            EventKind::TooBlurry => "VideoSource/ImageTooBlurry",
            EventKind::SceneChanged => "VideoSource/GlobalSceneChange",
            EventKind::HousingOpened => "Device/Trigger/DigitalInput",
            EventKind::Presence => "RuleEngine/FieldDetector/ObjectsInside",
            EventKind::LineCrossed => "RuleEngine/LineDetector/Crossed",
            EventKind::Loitering => "RuleEngine/LoiteringDetector/ObjectIsLoitering",
            EventKind::Crowding => "RuleEngine/CountAggregation/Counter",
            // no ONVIF topic exists for this; a vendor topic under the rule engine
            EventKind::Running => "RuleEngine/Vakt/Running",
            // the device's own health; a vendor topic under ONVIF's Monitoring root
            EventKind::DetectorStalled => "Monitoring/Vakt/DetectorStalled",
            EventKind::StorageFailed => "Device/HardwareFailure/StorageFailure",
            EventKind::EventsDropped => "Monitoring/Vakt/EventsDropped",
            EventKind::BrokerUnreachable => "Monitoring/Vakt/BrokerUnreachable",
            EventKind::ClockJumped => "Monitoring/Vakt/ClockJumped",
        }
    }

    /// Sabotage, camera-health and detector-health conditions: they put the box's status into `degraded` while
    /// they last.
    pub fn is_alarm(self) -> bool {
        matches!(
            self,
            EventKind::SignalLost
                | EventKind::TooDark
                | EventKind::TooBright
                | EventKind::TooBlurry
                | EventKind::SceneChanged
                | EventKind::HousingOpened
                | EventKind::DetectorStalled
                | EventKind::StorageFailed
                | EventKind::BrokerUnreachable
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Start,
    Update,
    End,
    /// A momentary event (a line crossing): one message, no update or end.
    Instant,
}

/// One message on the events topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub v: u32,
    /// ULID of the event; the same for its start, updates and end.
    pub id: String,
    #[serde(rename = "box")]
    pub box_id: String,
    pub site: String,
    pub camera: String,
    pub kind: EventKind,
    pub phase: Phase,
    pub zone: Option<String>,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// When this message was emitted.
    pub at: String,
    /// Per-box message counter over the events topic; never reused.
    pub seq: u64,
    /// Boot counter of the box when the message was emitted.
    pub boot: u64,
    pub bbox: Option<BBox>,
    /// Share of the frame involved (0..1).
    pub area: f64,
    /// Stream position of the frame that emitted this message, seconds.
    pub media_time_s: f64,
    /// Stream position where the condition began, seconds.
    pub onset_media_time_s: f64,
    pub attrs: serde_json::Map<String, serde_json::Value>,
    /// Ed25519 signature by the box's key, hex, over the RFC 8785 canonical JSON of the message
    /// without `sig` (edge/docs/design/delivery.md, "Signed events"). Absent on a box without an
    /// identity and in offline analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-22T17:13:30.123Z`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let ms = t.millisecond();
    let t = t.replace_nanosecond(ms as u32 * 1_000_000).expect("valid nanosecond");
    let s = t.format(&Rfc3339).expect("format RFC 3339");
    // `time` prints fractional seconds only when non-zero; normalise to exactly 3 digits.
    match s.find('.') {
        Some(_) => {
            let (head, _) = s.split_at(19);
            format!("{head}.{ms:03}Z")
        }
        None => format!("{}.{ms:03}Z", &s[..19]),
    }
}

/// Rounds to a fixed number of decimals so that payloads are short and stable.
pub fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_millis_and_z() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_795_000_000_123_456_789).unwrap();
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z");
        let t = OffsetDateTime::from_unix_timestamp(0).unwrap();
        assert_eq!(rfc3339(t), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn kinds_serialise_as_documented() {
        assert_eq!(serde_json::to_string(&EventKind::SignalLost).unwrap(), "\"signal_lost\"");
        for k in EventKind::ALL {
            assert_eq!(serde_json::to_string(k).unwrap(), format!("\"{}\"", k.as_str()));
            let t = k.onvif_topic();
            assert!(
                t.starts_with("VideoSource/")
                    || t.starts_with("RuleEngine/")
                    || t.starts_with("Monitoring/")
                    || t.starts_with("Device/"),
                "{t}"
            );
        }
    }
}
