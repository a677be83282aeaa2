//! Object detection, tracking and rules end to end on a real clip (TUD-Stadtmitte, 640×480,
//! 179 frames, people walking both ways along a shopping street, with MOT ground truth): the
//! offline `--tracks` output scored against the ground truth, the rule events it causes, and a
//! running box publishing them to a real mosquitto.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use support::*;

/// Detection on, the zones and line of the evaluation config (benches/eval/tud-stadtmitte.toml),
/// and a running threshold at walking pace.
fn analytics_extra() -> String {
    format!(
        r#"
[models]
dir = "{}"
[detect]
enabled = true
[tamper]
enabled = false
[rules]
presence_classes = ["person"]
loiter_time = "4s"
crowd_size = 4
crowd_time = "1s"
# walking pace counts as running here: the glue must let a rule hold over the frames between
# detector runs (running needs its condition on every frame for running_time)
running_speed = 0.3
running_people = 1
running_time = "1s"
[[zones]]
name = "street"
points = [[0.0, 0.4], [1.0, 0.4], [1.0, 1.0], [0.0, 1.0]]
[[lines]]
name = "centre"
points = [[0.5, 0.35], [0.5, 1.0]]
classes = ["person"]
"#,
        models_dir().display()
    )
}

fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let iw = ((a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0])).max(0.0);
    let ih = ((a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1])).max(0.0);
    let i = iw * ih;
    let u = a[2] * a[3] + b[2] * b[3] - i;
    if u > 0.0 { i / u } else { 0.0 }
}

/// Ground-truth boxes (conf = 1) per frame.
fn ground_truth(path: &Path) -> BTreeMap<u64, Vec<[f64; 4]>> {
    let mut gt: BTreeMap<u64, Vec<[f64; 4]>> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let f: Vec<f64> = line.split(',').map(|x| x.trim().parse().unwrap()).collect();
        if f[6] == 1.0 {
            gt.entry(f[0] as u64).or_default().push([f[2], f[3], f[4], f[5]]);
        }
    }
    gt
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

#[test]
fn tracks_follow_the_people_of_a_real_clip_and_rules_fire() {
    let (clip, gt_path) = tud();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = TestConfig::new("mqtt://127.0.0.1:1", clip.to_str().unwrap(), &analytics_extra());
    let (events_path, tracks_path) = (tmp.path().join("events.jsonl"), tmp.path().join("tracks.jsonl"));
    let out = vakt()
        .args(["--config", cfg.path.to_str().unwrap(), "analyze", "--input", clip.to_str().unwrap()])
        .args(["--events", events_path.to_str().unwrap(), "--tracks", tracks_path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("the object detector ran on 36 of 179 frames"), "every 200 ms of media time: {err}");

    // exactly one line per decoded frame, numbered from 1, boxes inside the 640 x 480 input
    let lines = read_jsonl(&tracks_path);
    assert_eq!(lines.len(), 179);
    let gt = ground_truth(&gt_path);
    let (mut matched, mut predicted, mut truth) = (0usize, 0usize, 0usize);
    let mut ids = BTreeSet::new();
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["frame"].as_u64(), Some(i as u64 + 1));
        let mut boxes = Vec::new();
        for o in l["objects"].as_array().unwrap() {
            let b: Vec<f64> = o["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[0] + b[2] <= 640.01 && b[1] + b[3] <= 480.01, "{o}");
            assert!((0.0..=1.0).contains(&o["score"].as_f64().unwrap()), "{o}");
            if o["class"] == "person" {
                boxes.push([b[0], b[1], b[2], b[3]]);
                ids.insert(o["track"].as_u64().unwrap());
            }
        }
        // greedy IoU >= 0.5 matching against the ground truth of this frame
        let g = gt.get(&(i as u64 + 1)).cloned().unwrap_or_default();
        let mut taken = vec![false; boxes.len()];
        for gb in &g {
            if let Some(j) = (0..boxes.len())
                .filter(|&j| !taken[j] && iou(boxes[j], *gb) >= 0.5)
                .max_by(|&a, &b| iou(boxes[a], *gb).total_cmp(&iou(boxes[b], *gb)))
            {
                taken[j] = true;
                matched += 1;
            }
        }
        predicted += boxes.len();
        truth += g.len();
    }
    let (recall, precision) = (matched as f64 / truth as f64, matched as f64 / predicted as f64);
    // benches/RESULTS.md has the exact figures (0.80 / 0.87 with py-motmetrics); this guards
    // against a regression that loses the people, or their places, altogether
    assert!(recall > 0.7 && precision > 0.75, "recall {recall:.3}, precision {precision:.3}");
    // 10 people walk through the clip; a tracker that fragments badly makes many more ids
    assert!((6..=25).contains(&ids.len()), "{} person tracks: {ids:?}", ids.len());

    let events = read_jsonl(&events_path);
    let schema = schema();
    for e in &events {
        let errors: Vec<String> = schema.iter_errors(e).map(|er| er.to_string()).collect();
        assert!(errors.is_empty(), "{e}: {errors:?}");
    }
    let kind = |k: &str| events.iter().filter(|e| e["kind"] == k).collect::<Vec<_>>();
    // people are in the street all along: one presence event, started and ended
    let presence = kind("presence");
    assert_eq!(presence.iter().map(|e| e["phase"].as_str().unwrap()).collect::<Vec<_>>().first(), Some(&"start"));
    assert!(presence.iter().all(|e| e["zone"] == "street" && e["attrs"]["class"] == "person"), "{presence:?}");
    assert_eq!(presence.last().unwrap()["phase"], "end");
    // walkers cross the centre line: instant events with a direction and a track
    let crossings = kind("line_crossed");
    assert!(!crossings.is_empty(), "{events:?}");
    for c in &crossings {
        assert_eq!((c["phase"].as_str(), c["zone"].as_str()), (Some("instant"), Some("centre")), "{c}");
        assert!(["left_to_right", "right_to_left"].contains(&c["attrs"]["direction"].as_str().unwrap()), "{c}");
        assert!(c["attrs"]["track"].as_u64().is_some() && c["ended_at"].is_string(), "{c}");
    }
    // more than 4 people in the street for over a second
    assert!(kind("crowding").iter().any(|e| e["phase"] == "start" && e["attrs"]["count"].as_u64() > Some(4)));
    // someone moving faster than 0.3 box heights per second for over a second
    assert!(kind("running").iter().any(|e| e["phase"] == "start" && e["attrs"]["count"].as_u64() >= Some(1)));
    // events and tracks carry no pixels: every value is a number, a short string or a list of them
    let text = std::fs::read_to_string(&events_path).unwrap();
    assert!(text.lines().all(|l| l.len() < 2048), "an event is a few hundred bytes");

    // offline replay is deterministic, detection included
    let again = tmp.path().join("tracks2.jsonl");
    let out = vakt()
        .args(["--config", cfg.path.to_str().unwrap(), "analyze", "--input", clip.to_str().unwrap()])
        .args(["--events", tmp.path().join("e2.jsonl").to_str().unwrap(), "--tracks", again.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read(&tracks_path).unwrap(), std::fs::read(&again).unwrap());
    assert_eq!(std::fs::read(&events_path).unwrap(), std::fs::read(tmp.path().join("e2.jsonl")).unwrap());
}

#[test]
fn tracks_need_detection_and_a_bad_model_is_refused() {
    let (clip, _) = tud();
    let tmp = tempfile::tempdir().unwrap();
    let off = TestConfig::new("mqtt://127.0.0.1:1", clip.to_str().unwrap(), "");
    let out = vakt()
        .args(["--config", off.path.to_str().unwrap(), "analyze", "--input", clip.to_str().unwrap()])
        .args(["--events", tmp.path().join("e.jsonl").to_str().unwrap()])
        .args(["--tracks", tmp.path().join("t.jsonl").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tracks needs object detection"));

    // a model directory with damaged weights: the box refuses to start, exit 2, naming the file
    let models = tmp.path().join("models/yolox_nano");
    std::fs::create_dir_all(&models).unwrap();
    for f in std::fs::read_dir(models_dir().join("yolox_nano")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, models.join(f.file_name().unwrap())).unwrap();
    }
    let weights = models.join("yolox_nano.onnx");
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&weights, bytes).unwrap();
    let extra = format!("[models]\ndir = \"{}\"\n[detect]\nenabled = true\n", tmp.path().join("models").display());
    let bad = TestConfig::new("mqtt://127.0.0.1:1", clip.to_str().unwrap(), &extra);
    let out = vakt().args(["--config", bad.path.to_str().unwrap(), "run"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("yolox_nano.onnx") && err.contains("sha256"), "{err}");
}

#[test]
fn a_running_box_publishes_people_and_crossings() {
    let (clip, _) = tud();
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "vakt/#");
    let cfg = TestConfig::new(&broker.url(), clip.to_str().unwrap(), &analytics_extra());
    let mut b = BoxProcess::start(&cfg.path);
    // the 7.2 s clip plays at its own rate, then the box ends every open event and stops
    let code = b.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", b.log());
    assert!(sub.wait_for(|m| m.payload.contains("\"stopped\""), Duration::from_secs(5)));
    let status = &sub.statuses()[0];
    assert_eq!(status["detection"], "yolox_nano", "{status}");
    let events = sub.events();
    let kinds: BTreeSet<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains("presence") && kinds.contains("line_crossed"), "{kinds:?}\n{}", b.log());
    let schema = schema();
    for e in &events {
        let errors: Vec<String> = schema.iter_errors(e).map(|er| er.to_string()).collect();
        assert!(errors.is_empty(), "{e}: {errors:?}");
    }
    // every presence event that started also ended before the box stopped
    let mut open: BTreeMap<&str, &str> = BTreeMap::new();
    for e in events.iter().filter(|e| e["kind"] == "presence") {
        open.insert(e["id"].as_str().unwrap(), e["phase"].as_str().unwrap());
    }
    assert!(open.values().all(|p| *p == "end"), "{open:?}");
    // events only (principle 2): no message the box published carries image bytes
    for m in sub.all() {
        assert!(m.payload.len() < 4096, "{}: {} bytes", m.topic, m.payload.len());
        no_image_in(&m.topic, &m.json());
    }
}

/// Fails if a JSON value holds anything that looks like a picture: a field named like one, or a
/// string long enough to be encoded pixels, or the base64 openings of JPEG and PNG.
fn no_image_in(topic: &str, v: &serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, x) in map {
                let k = k.to_lowercase();
                assert!(
                    !["image", "snapshot", "thumbnail", "jpeg", "png", "frame_data"].iter().any(|w| k.contains(w)),
                    "{topic}: field {k:?}"
                );
                no_image_in(topic, x);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| no_image_in(topic, x)),
        serde_json::Value::String(s) => {
            assert!(s.len() < 512, "{topic}: a {}-byte string", s.len());
            assert!(!s.starts_with("/9j/") && !s.starts_with("iVBOR"), "{topic}: {s}");
        }
        _ => {}
    }
}

/// D10: a detector that fails, or runs slower than `[redact] max_staleness`, does not take the box
/// down: it raises `detector_stalled` (an alarm event, and the status degraded) while motion goes
/// on, and the alarm ends at shutdown.
#[test]
fn a_failing_or_slow_detector_raises_detector_stalled_and_the_box_goes_on() {
    let extra = format!(
        "[models]\ndir = \"{}\"\n[detect]\nenabled = true\n[tamper]\nenabled = false\n",
        models_dir().display()
    );
    for (args, reason) in
        [(&["--fault-detector-fail-after", "2"][..], "error"), (&["--fault-detector-delay", "700"][..], "slow")]
    {
        let broker = Mosquitto::start();
        let sub = Subscriber::start(broker.port, "vakt/#");
        let cfg = TestConfig::new(&broker.url(), "test://ball", &extra);
        let mut b = BoxProcess::start_with(&cfg.path, args);
        let stalled = |m: &Msg| m.topic.ends_with("/events") && m.payload.contains("\"detector_stalled\"");
        assert!(sub.wait_for(stalled, Duration::from_secs(30)), "{args:?}: no detector_stalled\n{}", b.log());
        let degraded = |m: &Msg| {
            m.topic.ends_with("/status")
                && m.json()["alarms"].as_array().is_some_and(|a| a.iter().any(|x| x == "detector_stalled"))
        };
        assert!(sub.wait_for(degraded, Duration::from_secs(5)), "{args:?}: the status never listed the alarm");
        // the box goes on: more health messages, motion events, no exit
        let healths = |s: &Subscriber| s.all().iter().filter(|m| m.topic.ends_with("/health")).count();
        let before = healths(&sub);
        std::thread::sleep(Duration::from_millis(2500));
        assert!(healths(&sub) > before, "{args:?}: health stopped\n{}", b.log());
        assert!(b.child.try_wait().unwrap().is_none(), "{args:?}: the box exited\n{}", b.log());
        b.signal("TERM");
        assert_eq!(b.wait(Duration::from_secs(20)), Some(0), "{}", b.log());
        assert!(sub.wait_for(|m| m.payload.contains("\"stopped\""), Duration::from_secs(5)));
        let events = sub.events();
        let alarm: Vec<_> = events.iter().filter(|e| e["kind"] == "detector_stalled").collect();
        assert_eq!(alarm.len(), 2, "{args:?}: one start and one end: {alarm:?}");
        assert_eq!((alarm[0]["phase"].as_str(), alarm[1]["phase"].as_str()), (Some("start"), Some("end")));
        assert_eq!(alarm[0]["attrs"]["reason"], reason, "{}", alarm[0]);
        assert_eq!(alarm[0]["id"], alarm[1]["id"]);
        assert!(events.iter().any(|e| e["kind"] == "motion"), "{args:?}: motion stopped with the detector");
        let schema = schema();
        for e in &alarm {
            let errors: Vec<String> = schema.iter_errors(e).map(|er| er.to_string()).collect();
            assert!(errors.is_empty(), "{e}: {errors:?}");
        }
        if reason == "error" {
            let health: Vec<_> = sub.all().into_iter().filter(|m| m.topic.ends_with("/health")).collect();
            let last = health.last().unwrap().json();
            assert!(last["detector_failures"].as_u64().unwrap() >= 1, "{last}");
        }
    }
}
