//! The ONVIF dialect (`[mqtt] onvif = true`): every event is also published as ONVIF's event
//! broker shapes it over MQTT (ONVIF Core, "Event broker"; used by Profile M), so that a video
//! management system that speaks ONVIF consumes Vakt without glue:
//!
//! - topic `<prefix>/onvif-ej/<ONVIF topic>/&<camera>[/<zone>][/<class>]` (the `tns1:` prefix
//!   dropped; the source values joined by `/`; the class only for `presence`, which is one
//!   property per zone and class);
//! - payload `{"UtcTime", "Source": {"VideoSource", "Rule"?, "ClassType"?}, "Data": {...}}`;
//! - a condition with a start and an end is a property: its start and updates are retained, its
//!   end is sent with the state false and then cleared with a zero-byte retained message;
//! - a momentary event (`line_crossed`, `events_dropped`) is sent once, not retained.

use serde_json::{Value, json};

use vakt_core::event::{Event, EventKind, Phase};

/// (topic, payload, retain) for the messages that carry `e` in the dialect.
pub fn messages(e: &Event, prefix: &str) -> Vec<(String, Vec<u8>, bool)> {
    let mut topic = format!("{prefix}/onvif-ej/{}/&{}", e.kind.onvif_topic(), e.camera);
    let mut source = json!({"VideoSource": e.camera});
    if let Some(z) = &e.zone {
        topic = format!("{topic}/{z}");
        source["Rule"] = z.clone().into();
    }
    // Presence is open per zone and class at once: without the class in the topic, the end of one
    // class's event would clear the retained value of another's that is still open.
    if e.kind == EventKind::Presence
        && let Some(class) = e.attrs.get("class").and_then(Value::as_str)
    {
        topic = format!("{topic}/{class}");
        source["ClassType"] = class.into();
    }
    let active = e.phase != Phase::End;
    let data = match e.kind {
        EventKind::Presence => {
            json!({"IsInside": active, "Count": e.attrs.get("count").cloned().unwrap_or(Value::Null)})
        }
        EventKind::Loitering => json!({"IsLoitering": active}),
        EventKind::Crowding => {
            json!({"Count": if active { e.attrs.get("count").cloned().unwrap_or(Value::Null) } else { 0.into() }})
        }
        EventKind::LineCrossed => {
            json!({"ObjectId": e.attrs.get("track").cloned().unwrap_or(Value::Null), "ClassTypes": e.attrs.get("class").cloned().unwrap_or(Value::Null)})
        }
        EventKind::EventsDropped => json!({"Count": e.attrs.get("count").cloned().unwrap_or(Value::Null)}),
        _ => json!({"State": active}),
    };
    let payload = serde_json::to_vec(&json!({"UtcTime": e.at, "Source": source, "Data": data})).expect("serialisable");
    match e.phase {
        Phase::Instant => vec![(topic, payload, false)],
        Phase::Start | Phase::Update => vec![(topic, payload, true)],
        Phase::End => vec![(topic.clone(), payload, false), (topic, Vec::new(), true)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, phase: &str, zone: Option<&str>) -> Event {
        serde_json::from_value(json!({"v":1,"id":"01J","box":"b","site":"s","camera":"cam0","kind":kind,"phase":phase,
            "zone":zone,"started_at":"2026-11-23T08:00:00.000Z","ended_at":null,"at":"2026-11-23T08:00:01.000Z","seq":7,
            "boot":1,"bbox":null,"area":0.0,"media_time_s":1.0,"onset_media_time_s":0.5,"attrs":{"count":3}}))
        .unwrap()
    }

    #[test]
    fn a_property_is_retained_then_cleared_and_a_momentary_event_is_not() {
        let start = messages(&event("motion", "start", Some("door")), "vakt/s/b");
        assert_eq!(start.len(), 1);
        assert_eq!(start[0].0, "vakt/s/b/onvif-ej/VideoSource/MotionAlarm/&cam0/door");
        assert!(start[0].2, "retained");
        let v: Value = serde_json::from_slice(&start[0].1).unwrap();
        assert_eq!(
            v,
            json!({"UtcTime": "2026-11-23T08:00:01.000Z", "Source": {"VideoSource": "cam0", "Rule": "door"}, "Data": {"State": true}})
        );
        let end = messages(&event("motion", "end", Some("door")), "vakt/s/b");
        assert_eq!((end.len(), end[0].2, end[1].1.is_empty(), end[1].2), (2, false, true, true));
        let tamper = messages(&event("too_dark", "start", None), "p");
        assert_eq!(tamper[0].0, "p/onvif-ej/VideoSource/ImageTooDark/&cam0");
        let line = messages(&event("line_crossed", "instant", Some("gate")), "p");
        assert_eq!((line.len(), line[0].2), (1, false));
    }

    #[test]
    fn presence_of_two_classes_in_one_zone_are_two_properties() {
        let mut person = event("presence", "start", Some("door"));
        person.attrs.insert("class".into(), "person".into());
        let mut car = event("presence", "end", Some("door"));
        car.attrs.insert("class".into(), "car".into());
        let (p, c) = (messages(&person, "p"), messages(&car, "p"));
        assert_eq!(p[0].0, "p/onvif-ej/RuleEngine/FieldDetector/ObjectsInside/&cam0/door/person");
        // the car's end clears the car's retained value, not the person's
        assert_eq!(c[1].0, "p/onvif-ej/RuleEngine/FieldDetector/ObjectsInside/&cam0/door/car");
        let v: Value = serde_json::from_slice(&p[0].1).unwrap();
        assert_eq!(v["Source"], json!({"VideoSource": "cam0", "Rule": "door", "ClassType": "person"}));
        let whole_frame = messages(
            &{
                let mut e = event("presence", "start", None);
                e.attrs.insert("class".into(), "car".into());
                e
            },
            "p",
        );
        assert_eq!(whole_frame[0].0, "p/onvif-ej/RuleEngine/FieldDetector/ObjectsInside/&cam0/car");
    }
}
