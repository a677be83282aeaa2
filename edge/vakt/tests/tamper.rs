//! Tamper detection end to end: sabotaged picture sequences through `vakt analyze`, and
//! commissioning plus the boot check of a live box against a real mosquitto.

mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

const TAMPER: &str = "[tamper]\nreference_time = \"2s\"\nstart_after = \"1s\"\nend_after = \"1s\"\n";

/// A structured, non-periodic scene (chirped bars, blocks, light noise), shifted by `dx`.
fn scene(dx: i32, seed: u32) -> image::GrayImage {
    image::GrayImage::from_fn(320, 240, |x, y| {
        let xs = x as i32 - dx;
        let bars: i32 = if ((xs + 400) * (xs + 400) / 900) % 2 == 0 { 70 } else { 160 };
        let block: i32 = if (60..120).contains(&(y as i32)) && (120..200).contains(&xs) { 60 } else { 0 };
        let noise = ((x.wrapping_mul(7919) ^ y.wrapping_mul(104729) ^ seed.wrapping_mul(2654435761)) % 9) as i32 - 4;
        image::Luma([(bars + block + noise).clamp(0, 255) as u8])
    })
}

/// Writes 25 fps frames: 0–4 s normal, 4–7 s covered, 7–10 s normal, 10–13 s defocused,
/// 13–16 s normal, 16–19 s blinded, 19–22 s normal, 22–27 s the camera turned (shifted view).
fn sabotaged_sequence(dir: &Path) {
    for k in 0..675u32 {
        let t = k as f64 / 25.0;
        let img = if (4.0..7.0).contains(&t) {
            image::GrayImage::from_pixel(320, 240, image::Luma([6]))
        } else if (10.0..13.0).contains(&t) {
            image::imageops::blur(&scene(0, k), 5.0)
        } else if (16.0..19.0).contains(&t) {
            // a flashlight: gain × 4 + 120
            let mut img = scene(0, k);
            img.pixels_mut().for_each(|p| p.0[0] = (p.0[0] as u32 * 4 + 120).min(255) as u8);
            img
        } else if t >= 22.0 {
            scene(45, k)
        } else {
            scene(0, k)
        };
        img.save(dir.join(format!("f{:06}.png", k + 1))).unwrap();
    }
}

#[test]
fn each_sabotage_raises_its_condition_and_clears_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let frames = tmp.path().join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    sabotaged_sequence(&frames);
    let cfg = tmp.path().join("vakt.toml");
    std::fs::write(
        &cfg,
        format!(
            "[box]\nid = \"box-test\"\nsite = \"s\"\nstate_dir = \"state\"\n[source]\nuri = \"test://ball\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:1\"\ninsecure_plaintext = true\n[storage]\nrecord = false\n[detect]\nenabled = false\n{TAMPER}"
        ),
    )
    .unwrap();
    let events = tmp.path().join("e.jsonl");
    let o = run_vakt(&[
        "--config",
        cfg.to_str().unwrap(),
        "analyze",
        "--input",
        frames.join("f%06d.png").to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ev: Vec<serde_json::Value> =
        std::fs::read_to_string(&events).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let tamper: Vec<(String, String, f64)> = ev
        .iter()
        .filter(|e| e["kind"] != "motion")
        .map(|e| {
            (
                e["kind"].as_str().unwrap().into(),
                e["phase"].as_str().unwrap().into(),
                e["media_time_s"].as_f64().unwrap(),
            )
        })
        .collect();
    let find = |kind: &str, phase: &str| tamper.iter().find(|(k, p, _)| k == kind && p == phase).map(|x| x.2);
    // (kind, onset, end of sabotage): start within onset + start_after + 1 s, end after it ended
    for (kind, onset, until) in [("too_dark", 4.0, 7.0), ("too_blurry", 10.0, 13.0), ("too_bright", 16.0, 19.0)] {
        let s = find(kind, "start").unwrap_or_else(|| panic!("no {kind} start: {tamper:?}"));
        assert!(s >= onset + 1.0 && s <= onset + 2.5, "{kind} started at {s}: {tamper:?}");
        let e = find(kind, "end").unwrap_or_else(|| panic!("no {kind} end: {tamper:?}"));
        assert!(e >= until && e <= until + 2.5, "{kind} ended at {e}: {tamper:?}");
    }
    let moved = find("scene_changed", "start").unwrap_or_else(|| panic!("no scene_changed: {tamper:?}"));
    assert!((23.0..26.5).contains(&moved), "scene_changed at {moved}: {tamper:?}");
    // nothing else: exactly these four conditions, each with one start
    let starts: Vec<&str> = tamper.iter().filter(|(_, p, _)| p == "start").map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(starts, vec!["too_dark", "too_blurry", "too_bright", "scene_changed"], "{tamper:?}");
    let schema = schema();
    for e in &ev {
        assert!(schema.is_valid(e), "{e}");
    }
}

#[test]
fn commissioning_is_audited_and_a_camera_turned_while_off_is_caught_at_boot() {
    let tmp = tempfile::tempdir().unwrap();
    let aimed = make_clip(
        tmp.path(),
        "aimed.avi",
        "videotestsrc num-buffers=150 pattern=smpte ! video/x-raw,width=160,height=120,framerate=15/1",
    );
    let turned = make_clip(
        tmp.path(),
        "turned.avi",
        "videotestsrc num-buffers=150 pattern=pinwheel ! video/x-raw,width=160,height=120,framerate=15/1",
    );
    let broker = Mosquitto::start();
    let cfg = TestConfig::new(&broker.url(), aimed.to_str().unwrap(), TAMPER);
    std::fs::write(&cfg.path, std::fs::read_to_string(&cfg.path).unwrap().replace("[source]", "[source]\nloop = true"))
        .unwrap();
    let c = cfg.path.to_str().unwrap();

    let o = run_vakt(&["--config", c, "commission"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(cfg.state_dir().join("scene-reference.json").is_file());
    let again = run_vakt(&["--config", c, "commission"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"), "{}", String::from_utf8_lossy(&again.stderr));
    let forced = run_vakt(&["--config", c, "commission", "--force"]);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    // a damaged reference: refused without --force (nothing replaced), recovered with it
    let reference = cfg.state_dir().join("scene-reference.json");
    std::fs::write(&reference, b"{ not json").unwrap();
    let damaged = run_vakt(&["--config", c, "commission"]);
    assert_eq!(damaged.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&damaged.stderr).contains("--force"),
        "{}",
        String::from_utf8_lossy(&damaged.stderr)
    );
    assert_eq!(std::fs::read(&reference).unwrap(), b"{ not json");
    let recovered = run_vakt(&["--config", c, "commission", "--force"]);
    assert!(recovered.status.success(), "{}", String::from_utf8_lossy(&recovered.stderr));
    let audit = std::fs::read_to_string(cfg.state_dir().join("audit.log")).unwrap();
    assert_eq!(audit.matches("tamper.reference.learned").count(), 3, "{audit}");
    assert!(audit.contains("\"replaced\":\"damaged\""), "{audit}");
    assert!(run_vakt(&["--config", c, "audit", "verify"]).status.success());

    // the camera was turned while the box was off: the box comes up on another view
    std::fs::write(
        &cfg.path,
        std::fs::read_to_string(&cfg.path).unwrap().replace(aimed.to_str().unwrap(), turned.to_str().unwrap()),
    )
    .unwrap();
    let sub = Subscriber::start(broker.port, "vakt/#");
    let mut b = BoxProcess::start(&cfg.path);
    let moved =
        |m: &Msg| m.topic.ends_with("/events") && m.json()["kind"] == "scene_changed" && m.json()["phase"] == "start";
    assert!(sub.wait_for(moved, Duration::from_secs(20)), "no scene_changed at boot:\n{}", b.log());
    let degraded = |m: &Msg| {
        m.topic.ends_with("/status")
            && m.json()["condition"] == "degraded"
            && m.json()["alarms"].to_string().contains("scene_changed")
    };
    assert!(sub.wait_for(degraded, Duration::from_secs(5)), "status not degraded");
    let late = Subscriber::start(broker.port, "vakt/+/+/status");
    assert!(late.wait_for(|m| m.retained && degraded(m), Duration::from_secs(5)), "degraded status is not retained");
    b.signal("TERM");
    assert_eq!(b.wait(Duration::from_secs(20)), Some(0), "{}", b.log());
}
