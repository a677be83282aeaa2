//! The `vakt` command line on real files: offline replay, static masks, bad input, identity and
//! audit. No broker is needed here.

mod support;

use std::path::Path;

use support::*;

const OFFLINE_CFG: &str = r#"
[box]
id = "box-test"
site = "test-site"
state_dir = "state"
[source]
uri = "test://ball"
[mqtt]
url = "mqtt://127.0.0.1:1"
insecure_plaintext = true
[storage]
record = false
[events]
start_after = "200ms"
end_after = "1s"
"#;

fn write_cfg(dir: &Path, extra: &str) -> std::path::PathBuf {
    let p = dir.join("vakt.toml");
    // Object detection is exercised by its own tests; here it would only slow the motion ones.
    let detect = if extra.contains("[detect]") { "" } else { "[detect]\nenabled = false\n" };
    std::fs::write(&p, format!("{OFFLINE_CFG}\n{detect}{extra}")).unwrap();
    p
}

fn analyze(cfg: &Path, input: &Path, events: &Path, masks: Option<&Path>) -> std::process::Output {
    let mut args = vec![
        "--config".to_string(),
        cfg.display().to_string(),
        "analyze".into(),
        "--input".into(),
        input.display().to_string(),
        "--events".into(),
        events.display().to_string(),
    ];
    if let Some(m) = masks {
        args.extend(["--motion-masks".into(), m.display().to_string()]);
    }
    vakt().args(&args).output().unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A black frame with a bright ball bouncing only inside x 20..60, y 20..50 (of 160×120).
fn ball_in_a_box(dir: &Path) -> std::path::PathBuf {
    make_clip(
        dir,
        "boxed-ball.avi",
        "videotestsrc num-buffers=45 pattern=black ! video/x-raw,width=160,height=120,framerate=15/1 ! c.sink_0 \
         videotestsrc num-buffers=45 pattern=ball ! video/x-raw,width=40,height=30,framerate=15/1 ! c.sink_1 \
         compositor name=c sink_1::xpos=20 sink_1::ypos=20",
    )
}

#[test]
fn motion_inside_a_privacy_mask_is_never_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = ball_in_a_box(tmp.path());
    // control: without the mask the ball is motion and raises events
    let plain = write_cfg(tmp.path(), "");
    let out = analyze(&plain, &clip, &tmp.path().join("plain.jsonl"), None);
    assert!(out.status.success(), "{}", stderr(&out));
    let plain_events = std::fs::read_to_string(tmp.path().join("plain.jsonl")).unwrap();
    assert!(plain_events.contains("\"phase\":\"start\""), "the control clip must produce motion: {plain_events}");

    let masked = write_cfg(
        tmp.path(),
        "[[privacy.masks]]\nname = \"ball-area\"\npoints = [[0.1, 0.15], [0.4, 0.15], [0.4, 0.45], [0.1, 0.45]]\n",
    );
    let masks = tmp.path().join("masks");
    let out = analyze(&masked, &clip, &tmp.path().join("masked.jsonl"), Some(&masks));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(tmp.path().join("masked.jsonl")).unwrap(), "", "no events under a mask");
    let pngs: Vec<_> = std::fs::read_dir(&masks).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(pngs.len(), 45, "one mask per decoded frame");
    for p in pngs {
        let img = image::open(&p).unwrap().to_luma8();
        assert_eq!((img.width(), img.height()), (160, 120));
        assert!(img.pixels().all(|px| px.0[0] == 0), "{} shows motion under the privacy mask", p.display());
    }
}

#[test]
fn offline_replay_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_cfg(tmp.path(), "");
    let (a, b) = (tmp.path().join("a.jsonl"), tmp.path().join("b.jsonl"));
    let clip = demo_clip();
    for out in [&a, &b] {
        let o = analyze(&cfg, &clip, out, None);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(a.len() > 500, "the demo clip has motion events");
    assert!(a == b, "two replays differ");
    let first: serde_json::Value = serde_json::from_slice(a.split(|c| *c == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["seq"], 1);
    assert!(first["at"].as_str().unwrap().starts_with("1970-01-01T00:00:"), "media clock anchored at --start-time");
}

#[test]
fn bad_input_gets_a_clear_error_and_no_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let good = write_cfg(tmp.path(), "");
    let garbage = tmp.path().join("garbage.mp4");
    std::fs::write(&garbage, (0..200_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<_>>())
        .unwrap();
    let bad_toml = tmp.path().join("bad.toml");
    std::fs::write(&bad_toml, "[box\nid = 1").unwrap();
    let bad_value = tmp.path().join("bad-value.toml");
    std::fs::write(&bad_value, OFFLINE_CFG.replace("record = false", "record = \"yes\"")).unwrap();
    let bad_uri = tmp.path().join("bad-uri.toml");
    std::fs::write(&bad_uri, OFFLINE_CFG.replace("test://ball", "gopher://cam/1")).unwrap();
    let packaged = repo_root().join("deploy/config/vakt.toml");
    // this machine has no GPIO: a configured housing switch must fail with a clear message
    let no_gpio = tmp.path().join("no-gpio.toml");
    std::fs::write(&no_gpio, format!("{OFFLINE_CFG}\n[tamper.housing]\nchip = \"/dev/gpiochip9\"\nline = 4\n"))
        .unwrap();

    let g = good.to_str().unwrap();
    let ev = tmp.path().join("e.jsonl");
    let ev = ev.to_str().unwrap();
    // (arguments, expected exit code, text the error must contain)
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--config", bad_toml.to_str().unwrap(), "check-config"], 2, "invalid TOML"),
        (vec!["--config", bad_value.to_str().unwrap(), "check-config"], 2, "storage.record"),
        (vec!["--config", bad_uri.to_str().unwrap(), "check-config"], 2, "`source.uri` = \"gopher://cam/1\""),
        (vec!["--config", packaged.to_str().unwrap(), "check-config"], 2, "`box.id`"),
        (vec!["--config", "/nonexistent/vakt.toml", "check-config"], 2, "cannot read the config file"),
        (vec!["--config", no_gpio.to_str().unwrap(), "run"], 1, "cannot open GPIO line 4 on /dev/gpiochip9"),
        (
            vec!["--config", g, "analyze", "--input", "/nonexistent/clip.mp4", "--events", ev],
            1,
            "/nonexistent/clip.mp4",
        ),
        (vec!["--config", g, "analyze", "--input", garbage.to_str().unwrap(), "--events", ev], 1, "garbage.mp4"),
        (vec!["--config", g, "analyze", "--input", "rtsp://cam/1", "--events", ev], 1, "video file"),
        (vec!["--config", g, "analyze", "--input", "a.mp4", "--events", ev, "--start-time", "noon"], 2, "--start-time"),
    ];
    for (args, code, want) in cases {
        let o = run_vakt(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn provision_creates_an_identity_and_the_audit_chain_catches_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_cfg(tmp.path(), "");
    let c = cfg.to_str().unwrap();
    let o = run_vakt(&["--config", c, "provision"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("SHA256:"), "{out}");
    let id = tmp.path().join("state/identity");
    for f in ["signing.key", "signing.pub", "tls.key", "tls.csr"] {
        assert!(id.join(f).is_file(), "{f} missing");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(id.join("signing.key")).unwrap().permissions().mode() & 0o777, 0o600);
    // a second provision must not silently replace the keys
    let again = run_vakt(&["--config", c, "provision"]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));

    let v = run_vakt(&["--config", c, "audit", "verify"]);
    assert!(v.status.success(), "{}", stderr(&v));
    assert!(String::from_utf8_lossy(&v.stdout).contains("1 entries"));

    // change one byte of the entry: verification must fail and name the line
    let log = tmp.path().join("state/audit.log");
    let text = std::fs::read_to_string(&log).unwrap().replacen("box.provisioned", "box.provisionee", 1);
    std::fs::write(&log, text).unwrap();
    let v = run_vakt(&["--config", c, "audit", "verify"]);
    assert_eq!(v.status.code(), Some(1));
    assert!(stderr(&v).contains("line 1"), "{}", stderr(&v));
}
