//! The box end to end: a real mosquitto on a free loopback port, the real `vakt` binary, real
//! GStreamer sources, real files. Assertions are on what a consumer of the broker sees.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::*;

fn seqs(events: &[serde_json::Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

fn assert_strictly_increasing(v: &[u64]) {
    for w in v.windows(2) {
        assert!(w[1] > w[0], "seq not strictly increasing: {v:?}");
    }
}

#[test]
fn a_clip_gives_ordered_schema_valid_events_and_a_clean_stop() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "vakt/#");
    let tmp = tempfile::tempdir().unwrap();
    let clip = ball_clip(tmp.path(), 60); // 4 s of a moving ball, then the clip ends
    let cfg = TestConfig::new(&broker.url(), clip.to_str().unwrap(), "");
    let mut b = BoxProcess::start(&cfg.path);
    let code = b.wait(Duration::from_secs(40));
    assert_eq!(code, Some(0), "box did not stop cleanly at the end of the clip:\n{}", b.log());
    assert!(sub.wait_for(|m| m.payload.contains("\"stopped\""), Duration::from_secs(5)));

    let statuses = sub.statuses();
    assert_eq!(statuses.first().unwrap()["state"], "online", "{statuses:?}");
    assert_eq!(statuses.last().unwrap()["state"], "stopped", "{statuses:?}");
    assert_eq!(statuses[0]["recording"], false);
    assert_eq!(statuses[0]["config_digest"].as_str().unwrap().len(), 64);

    let events = sub.events();
    assert!(events.len() >= 3, "a moving ball for 4 s gives start, updates and end: {events:?}");
    let schema = schema();
    for e in &events {
        let errors: Vec<String> = schema.iter_errors(e).map(|er| er.to_string()).collect();
        assert!(errors.is_empty(), "{e}: {errors:?}");
    }
    assert_strictly_increasing(&seqs(&events));
    // per event id: exactly one start first, then updates, then exactly one end
    let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &events {
        by_id.entry(e["id"].as_str().unwrap().into()).or_default().push(e["phase"].as_str().unwrap().into());
    }
    for (id, phases) in &by_id {
        assert_eq!(phases.first().map(String::as_str), Some("start"), "{id}: {phases:?}");
        assert_eq!(phases.last().map(String::as_str), Some("end"), "{id}: {phases:?}");
        assert!(phases[1..phases.len() - 1].iter().all(|p| p == "update"), "{id}: {phases:?}");
    }
    // an event keeps its start time across phases
    let first_id = events[0]["id"].as_str().unwrap();
    let starts: Vec<&str> =
        events.iter().filter(|e| e["id"] == first_id).map(|e| e["started_at"].as_str().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] == w[1]), "{starts:?}");
    // health arrives with counters
    let health: Vec<serde_json::Value> =
        sub.all().iter().filter(|m| m.topic.ends_with("/health")).map(Msg::json).collect();
    assert!(health.iter().any(|h| h["frames_in"].as_u64().unwrap() > 0), "{health:?}");
}

#[test]
fn seq_keeps_increasing_across_restarts_and_boot_counts_starts() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "vakt/+/+/events");
    let tmp = tempfile::tempdir().unwrap();
    let clip = ball_clip(tmp.path(), 30);
    let cfg = TestConfig::new(&broker.url(), clip.to_str().unwrap(), "");
    for _ in 0..2 {
        let mut b = BoxProcess::start(&cfg.path);
        assert_eq!(b.wait(Duration::from_secs(30)), Some(0), "{}", b.log());
    }
    let events = sub.events();
    let boots: Vec<u64> = events.iter().map(|e| e["boot"].as_u64().unwrap()).collect();
    assert!(boots.contains(&1) && boots.contains(&2), "{boots:?}");
    assert_strictly_increasing(&seqs(&events));
    let max_first = events.iter().filter(|e| e["boot"] == 1).map(|e| e["seq"].as_u64().unwrap()).max().unwrap();
    let min_second = events.iter().filter(|e| e["boot"] == 2).map(|e| e["seq"].as_u64().unwrap()).min().unwrap();
    assert!(min_second > max_first, "{max_first} then {min_second}");
}

#[test]
fn kill_9_leaves_a_retained_offline_status() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "vakt/+/+/status");
    let cfg = TestConfig::new(&broker.url(), "test://ball?width=160&height=120&fps=15", "");
    let b = BoxProcess::start(&cfg.path);
    assert!(sub.wait_for(|m| m.payload.contains("\"online\""), Duration::from_secs(15)), "{}", b.log());
    b.signal("KILL");
    assert!(sub.wait_for(|m| m.payload.contains("\"offline\""), Duration::from_secs(15)), "no last will");
    // a consumer arriving later sees the retained offline status
    let late = Subscriber::start(broker.port, "vakt/+/+/status");
    assert!(late.wait_for(|m| m.retained && m.payload.contains("\"offline\""), Duration::from_secs(5)));
}

#[test]
fn the_box_reconnects_after_the_broker_restarts() {
    let mut broker = Mosquitto::start();
    let cfg = TestConfig::new(&broker.url(), "test://ball?width=160&height=120&fps=15", "");
    let mut b = BoxProcess::start(&cfg.path);
    let sub = Subscriber::start(broker.port, "vakt/#");
    assert!(sub.wait_for(|m| m.topic.ends_with("/events"), Duration::from_secs(15)), "{}", b.log());
    let before = seqs(&sub.events()).into_iter().max().unwrap();
    drop(sub);
    broker.stop();
    std::thread::sleep(Duration::from_secs(2));
    broker.restart_checked();
    let sub = Subscriber::start(broker.port, "vakt/#");
    // A subscriber already present gets the republished status live (retain flag cleared)...
    assert!(
        sub.wait_for(|m| m.topic.ends_with("/status") && m.payload.contains("\"online\""), Duration::from_secs(20)),
        "status not republished after reconnect:\n{}",
        b.log()
    );
    // ...and the new broker holds it as the retained status for later consumers.
    let late = Subscriber::start(broker.port, "vakt/+/+/status");
    assert!(late.wait_for(|m| m.retained && m.payload.contains("\"online\""), Duration::from_secs(5)));
    assert!(
        sub.wait_for(
            |m| m.topic.ends_with("/events") && m.json()["seq"].as_u64().unwrap() > before,
            Duration::from_secs(20)
        ),
        "no new events after reconnect"
    );
    b.signal("TERM");
    assert_eq!(b.wait(Duration::from_secs(20)), Some(0), "{}", b.log());
    assert!(sub.wait_for(|m| m.payload.contains("\"stopped\""), Duration::from_secs(5)));
}

#[test]
fn a_missing_source_raises_signal_lost_and_its_end_when_frames_return() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "vakt/#");
    let tmp = tempfile::tempdir().unwrap();
    let clip = ball_clip(tmp.path(), 45);
    let target = tmp.path().join("camera.avi");
    let cfg = TestConfig::new(&broker.url(), target.to_str().unwrap(), "");
    std::fs::write(&cfg.path, std::fs::read_to_string(&cfg.path).unwrap().replace("[source]", "[source]\nloop = true"))
        .unwrap();
    let mut b = BoxProcess::start(&cfg.path);
    let lost = |phase: &'static str| {
        move |m: &Msg| m.topic.ends_with("/events") && m.json()["kind"] == "signal_lost" && m.json()["phase"] == phase
    };
    assert!(sub.wait_for(lost("start"), Duration::from_secs(15)), "{}", b.log());
    std::fs::copy(&clip, &target).unwrap();
    assert!(sub.wait_for(lost("end"), Duration::from_secs(15)), "{}", b.log());
    let ev = sub.events();
    let sl: Vec<&serde_json::Value> = ev.iter().filter(|e| e["kind"] == "signal_lost").collect();
    assert_eq!(sl[0]["id"], sl[1]["id"]);
    assert!(sl[0]["attrs"]["reason"].as_str().unwrap().contains("no such file"), "{}", sl[0]);
    assert!(sl[1]["ended_at"].is_string());
    b.signal("TERM");
    assert_eq!(b.wait(Duration::from_secs(20)), Some(0), "{}", b.log());
}

#[test]
fn a_second_signal_exits_at_once() {
    let broker = Mosquitto::start();
    let cfg = TestConfig::new(&broker.url(), "test://ball?width=160&height=120&fps=15", "");
    let sub = Subscriber::start(broker.port, "vakt/#");
    let mut b = BoxProcess::start(&cfg.path);
    assert!(sub.wait_for(|m| m.payload.contains("\"online\""), Duration::from_secs(15)));
    b.signal("INT");
    b.signal("INT");
    let code = b.wait(Duration::from_secs(10));
    assert!(matches!(code, Some(0) | Some(130)), "{code:?}\n{}", b.log());
}
