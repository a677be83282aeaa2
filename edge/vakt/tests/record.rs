//! The ring buffer end to end: a running box records a real clip (TUD-Stadtmitte) into encrypted
//! segments; tracks are listed and footage exported through the control socket and with the box
//! stopped; exports verify, fail verification after one changed byte, and decode with GStreamer;
//! a subject-access export keeps one person; holds and decommission; everything audited.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// Recording on, 2 s segments, detection on; the footage key in a systemd-style credential
/// directory (`keys`), so footage outlives the process.
fn record_config(broker: &str, extra: &str) -> (TestConfig, PathBuf) {
    let keys = tempfile::tempdir().unwrap().keep();
    std::fs::write(keys.join("vakt-footage-key"), "5a".repeat(32)).unwrap();
    let profile = std::fs::read_to_string(repo_root().join("hardware/generic.toml"))
        .unwrap()
        .replace("provider = \"ram\"", "provider = \"credential\"");
    let cfg = TestConfig::new(
        broker,
        tud().0.to_str().unwrap(),
        &format!(
            r#"
[models]
dir = "{}"
[detect]
enabled = true
[tamper]
enabled = false
[hardware]
profile_file = "board.toml"
[[zones]]
name = "street"
points = [[0.0, 0.4], [1.0, 0.4], [1.0, 1.0], [0.0, 1.0]]
{extra}"#,
            models_dir().display()
        ),
    );
    std::fs::write(cfg.dir.path().join("board.toml"), profile).unwrap();
    let text = std::fs::read_to_string(&cfg.path)
        .unwrap()
        .replace("[storage]\nrecord = false", "[storage]\nrecord = true\nsegment = \"2s\"\nmax_age = \"1h\"");
    std::fs::write(&cfg.path, text).unwrap();
    ok(&cli(&cfg.path, &keys, &["provision"]));
    (cfg, keys)
}

fn cli(cfg: &Path, keys: &Path, args: &[&str]) -> std::process::Output {
    vakt().env("CREDENTIALS_DIRECTORY", keys).arg("--config").arg(cfg).args(args).output().unwrap()
}

/// `vakt export` of [from, to] into `dir` for `requester`, with `extra` flags.
fn export(
    cfg: &Path,
    keys: &Path,
    from: &str,
    to: &str,
    dir: &Path,
    requester: &str,
    extra: &[&str],
) -> std::process::Output {
    let dir = dir.to_str().unwrap();
    let mut args = vec!["export", "--from", from, "--to", to, "--output", dir, "--requester", requester];
    args.extend_from_slice(extra);
    cli(cfg, keys, &args)
}

fn ok(out: &std::process::Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    text
}

fn audit_actions(state: &Path) -> Vec<String> {
    std::fs::read_to_string(state.join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["action"].as_str().unwrap().to_string())
        .collect()
}

/// Frames GStreamer decodes from an MP4.
fn decoded_frames(mp4: &Path) -> u64 {
    use gstreamer::prelude::*;
    gstreamer::init().unwrap();
    let desc = format!("filesrc location={} ! decodebin ! videoconvert ! appsink name=s sync=false", mp4.display());
    let p = gstreamer::parse::launch(&desc).unwrap().downcast::<gstreamer::Pipeline>().unwrap();
    let sink = p.by_name("s").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
    p.set_state(gstreamer::State::Playing).unwrap();
    let mut n = 0;
    while sink.pull_sample().is_ok() {
        n += 1;
    }
    p.set_state(gstreamer::State::Null).unwrap();
    n
}

/// Every frame of an MP4 as 160×120 grey pixels.
fn grey_frames(mp4: &Path) -> Vec<Vec<u8>> {
    use gstreamer::prelude::*;
    gstreamer::init().unwrap();
    let desc = format!(
        "filesrc location={} ! decodebin ! videoconvert ! videoscale ! video/x-raw,format=GRAY8,width=160,height=120 ! appsink name=s sync=false",
        mp4.display()
    );
    let p = gstreamer::parse::launch(&desc).unwrap().downcast::<gstreamer::Pipeline>().unwrap();
    let sink = p.by_name("s").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
    p.set_state(gstreamer::State::Playing).unwrap();
    let mut out = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let b = sample.buffer().unwrap().map_readable().unwrap();
        out.push(b.as_slice()[..160 * 120].to_vec());
    }
    p.set_state(gstreamer::State::Null).unwrap();
    out
}

/// Share of pixels, over all frames, that differ clearly between two clips of the same footage.
fn differing_share(a: &[Vec<u8>], b: &[Vec<u8>]) -> f64 {
    let n = a.len().min(b.len());
    assert!(n > 0);
    let differ: usize = (0..n).map(|i| a[i].iter().zip(&b[i]).filter(|(x, y)| x.abs_diff(**y) > 40).count()).sum();
    differ as f64 / (n * 160 * 120) as f64
}

fn rfc(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

#[test]
fn a_box_records_then_exports_verified_redacted_and_subject_access_clips() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "vakt/#");
    let (cfg, keys) = record_config(&broker.url(), "");
    let from = time::OffsetDateTime::now_utc() - Duration::from_secs(5);
    let mut cmd = vakt();
    cmd.env("CREDENTIALS_DIRECTORY", &keys).arg("--config").arg(&cfg.path).arg("run");
    let mut b = BoxProcess::spawn(cmd);
    // the 7.2 s clip plays at its own rate, then the box stops
    assert_eq!(b.wait(Duration::from_secs(90)), Some(0), "{}", b.log());
    let to = time::OffsetDateTime::now_utc() + Duration::from_secs(5);
    let status = &sub.statuses()[0];
    assert_eq!(
        (status["recording"].as_bool(), status["key_protection"].as_str()),
        (Some(true), Some("credential")),
        "{status}"
    );
    let state = cfg.state_dir();

    // the segments on disk: encrypted, no plaintext video
    let segs: Vec<PathBuf> = std::fs::read_dir(state.join("ring/seg")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(segs.len() >= 2, "{segs:?}\n{}", b.log());
    for s in &segs {
        assert!(s.extension().is_some_and(|e| e == "vseg"), "{s:?}");
        let bytes = std::fs::read(s).unwrap();
        assert!(!bytes.windows(4).any(|w| w == b"ftyp"), "{s:?} holds an MP4 header");
        assert!(!bytes.windows(4).any(|w| w == [0, 0, 0, 1]), "{s:?} holds an H.264 start code");
    }

    // the box is stopped: the CLI opens the store itself
    let listing = ok(&cli(
        &cfg.path,
        &keys,
        &["export", "--list-tracks", "--from", &rfc(from), "--to", &rfc(to), "--requester", "police:4711"],
    ));
    let ids: Vec<u64> = listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("track"))
        .filter(|l| l.contains("person"))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(ids.len() >= 3, "{listing}");
    assert!(listing.contains("zones: street"), "{listing}");
    // track times are wall-clock times of this recording
    assert!(listing.contains(&format!("person     {}", &rfc(from)[..10])), "{listing}");

    let out_dir = cfg.dir.path().join("export-1");
    let text = ok(&export(&cfg.path, &keys, &rfc(from), &rfc(to), &out_dir, "police:4711", &[]));
    assert!(text.contains("(redacted)"), "{text}");
    let first_text = text.clone();
    // people are masked from the recorded track boxes, not by masking every frame whole
    let whole: u64 = text.split("; ").nth(1).and_then(|t| t.split_whitespace().next()?.parse().ok()).unwrap();
    assert!(whole < 30, "{whole} frames masked whole: the recorded results did not reach the masker\n{text}");
    let clip = out_dir.join("clip.mp4");
    let frames = decoded_frames(&clip);
    assert!(frames >= 60, "{frames} frames decoded\n{text}");
    let pubkey = out_dir.join("box-signing.pub");
    ok(&cli(&cfg.path, &keys, &["verify-export", out_dir.to_str().unwrap(), "--trust", pubkey.to_str().unwrap()]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["masking"], "redacted");
    assert_eq!(manifest["requester"], "police:4711");
    assert!(manifest["segments"].as_array().unwrap().len() >= 2, "{manifest}");

    // one changed byte in the clip: verification fails
    let mut bytes = std::fs::read(&clip).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 0x01;
    std::fs::write(&clip, &bytes).unwrap();
    let out = cli(&cfg.path, &keys, &["verify-export", out_dir.to_str().unwrap(), "--trust", pubkey.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("was changed after export"), "{out:?}");
    // and a changed manifest fails on its signature
    bytes[n] ^= 0x01;
    std::fs::write(&clip, &bytes).unwrap();
    let m = std::fs::read_to_string(out_dir.join("manifest.json")).unwrap().replace("police:4711", "police:4712");
    std::fs::write(out_dir.join("manifest.json"), m).unwrap();
    let out = cli(&cfg.path, &keys, &["verify-export", out_dir.to_str().unwrap(), "--trust", pubkey.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("signature does not verify"), "{out:?}");

    // subject access: one track kept; more of the picture visible than in the redacted export,
    // still less than unmasked
    let sa = cfg.dir.path().join("export-sa");
    let text = ok(&cli(
        &cfg.path,
        &keys,
        &[
            "export",
            "--from",
            &rfc(from),
            "--to",
            &rfc(to),
            "--output",
            sa.to_str().unwrap(),
            "--requester",
            "subject:42",
            "--keep-track",
            &ids[0].to_string(),
        ],
    ));
    assert!(text.contains("(subject_access)"), "{text}");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(sa.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["keep_track"], ids[0]);
    // unmasked (static masks only), with a reason
    let um = cfg.dir.path().join("export-unmasked");
    ok(&export(
        &cfg.path,
        &keys,
        &rfc(from),
        &rfc(to),
        &um,
        "police:4711",
        &["--unmasked", "--reason", "court order 2026/77"],
    ));
    // the subject-access clip reveals something the redacted one masks, but far less than the
    // unmasked clip shows: one person, not everyone
    let (red, sa_f, un) = (grey_frames(&clip), grey_frames(&sa.join("clip.mp4")), grey_frames(&um.join("clip.mp4")));
    let (sa_d, un_d) = (differing_share(&red, &sa_f), differing_share(&red, &un));
    assert!(sa_d > 0.001, "the kept track is not visible: {sa_d} (unmasked {un_d})\n{listing}\n{first_text}\n{text}");
    assert!(un_d > 0.05, "unmasked shows people: {un_d}");
    assert!(sa_d < un_d / 3.0, "subject access shows more than one person: {sa_d} vs unmasked {un_d}");

    // unmasked needs a reason
    let out = cli(
        &cfg.path,
        &keys,
        &["export", "--from", &rfc(from), "--to", &rfc(to), "--output", "/tmp/never", "--requester", "x", "--unmasked"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--reason"));

    let actions = audit_actions(&state);
    for a in ["storage.recovered", "export.tracks_listed", "export.started", "export.unmasked", "export.completed"] {
        assert!(actions.iter().any(|x| x == a), "{a} not audited: {actions:?}");
    }
    // an export is audited before it happens
    let started = actions.iter().position(|x| x == "export.started").unwrap();
    let completed = actions.iter().position(|x| x == "export.completed").unwrap();
    assert!(started < completed);

    // without the credential, nothing of it can be read: recovery drops every segment
    let copy = tempfile::tempdir().unwrap();
    let other_keys = tempfile::tempdir().unwrap();
    std::fs::write(other_keys.path().join("vakt-footage-key"), "11".repeat(32)).unwrap();
    let text = std::fs::read_to_string(&cfg.path)
        .unwrap()
        .replace("state_dir = \"state\"", &format!("state_dir = \"{}\"", copy.path().join("state").display()));
    let copied_cfg = copy.path().join("vakt.toml");
    std::fs::write(&copied_cfg, text).unwrap();
    std::fs::copy(cfg.dir.path().join("board.toml"), copy.path().join("board.toml")).unwrap();
    Command::new("cp").arg("-a").arg(&state).arg(copy.path().join("state")).status().unwrap();
    let v = ok(&cli(&copied_cfg, other_keys.path(), &["storage"]));
    assert!(v.contains("\"segments\": 0"), "{v}");
}

#[test]
fn a_running_box_serves_exports_and_holds_over_its_socket_and_decommission_exports_them_first() {
    let broker = Mosquitto::start();
    let (cfg, keys) = record_config(&broker.url(), "");
    // loop the clip: the box keeps running
    let text = std::fs::read_to_string(&cfg.path).unwrap().replace("stall_timeout", "loop = true\nstall_timeout");
    std::fs::write(&cfg.path, text).unwrap();
    let from = time::OffsetDateTime::now_utc() - Duration::from_secs(2);
    let mut cmd = vakt();
    cmd.env("CREDENTIALS_DIRECTORY", &keys).arg("--config").arg(&cfg.path).arg("run");
    let mut b = BoxProcess::spawn(cmd);
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cli(&cfg.path, &keys, &["storage"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["segments"].as_u64().unwrap_or(0) >= 2 {
                break;
            }
        }
        assert!(Instant::now() < until, "no segments recorded\n{}", b.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    let to = time::OffsetDateTime::now_utc();
    let held_until = rfc(to + Duration::from_secs(24 * 3600));
    let text = ok(&cli(
        &cfg.path,
        &keys,
        &[
            "hold",
            "--from",
            &rfc(from),
            "--to",
            &rfc(to),
            "--until",
            &held_until,
            "--requester",
            "police:1",
            "--reason",
            "case 2026/9",
        ],
    ));
    assert!(text.contains("segments held"), "{text}");
    // a hold beyond 30 days is refused, naming the bound
    let out = cli(
        &cfg.path,
        &keys,
        &[
            "hold",
            "--from",
            &rfc(from),
            "--to",
            &rfc(to),
            "--until",
            "2099-01-01T00:00:00Z",
            "--requester",
            "p",
            "--reason",
            "r",
        ],
    );
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("at most 30 days"), "{out:?}");
    // export through the running box
    let out_dir = cfg.dir.path().join("live-export");
    ok(&export(&cfg.path, &keys, &rfc(from), &rfc(to), &out_dir, "police:1", &[]));
    ok(&cli(&cfg.path, &keys, &["verify-export", out_dir.to_str().unwrap()]));
    // decommission refuses while the box runs
    let dec = cfg.dir.path().join("decommission");
    let out = cli(&cfg.path, &keys, &["decommission", "--output", dec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("stop it first"));

    b.signal("TERM");
    assert_eq!(b.wait(Duration::from_secs(30)), Some(0), "{}", b.log());
    let text = ok(&cli(&cfg.path, &keys, &["decommission", "--output", dec.to_str().unwrap()]));
    assert!(text.contains("exported: 1 holds"), "{text}");
    assert!(dec.join("hold-1/clip.mp4").is_file() && dec.join("audit.log").is_file());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dec.join("decommission.json")).unwrap()).unwrap();
    assert!(report["destroyed"]["segments"].as_u64().unwrap() >= 2, "{report}");
    let state = cfg.state_dir();
    assert_eq!(std::fs::read_dir(state.join("ring/seg")).unwrap().count(), 0);
    assert!(
        !std::fs::read_dir(state.join("ring/keys")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("journal"))
    );
    assert!(state.join("decommissioned").is_file());
    let actions = audit_actions(&state);
    for a in ["hold.created", "decommission.started", "decommission.completed"] {
        assert!(actions.iter().any(|x| x == a), "{a} not audited: {actions:?}");
    }
}

/// A small tmpfs as the storage directory: when it fills, the oldest segments go and recording
/// goes on; when only held footage is left, recording pauses with a `storage_failed` alarm while
/// events keep flowing; released, recording resumes and the alarm ends. Needs root (mount).
#[test]
fn a_full_disk_evicts_the_oldest_footage_and_raises_an_alarm_when_only_held_footage_is_left() {
    if unsafe { libc_geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "vakt/#");
    let (cfg, keys) = record_config(&broker.url(), "[rules]\npresence_classes = [\"person\"]\n");
    let disk = cfg.dir.path().join("small-disk");
    std::fs::create_dir_all(&disk).unwrap();
    let mounted =
        Command::new("mount").args(["-t", "tmpfs", "-o", "size=5m"]).arg("tmpfs").arg(&disk).status().unwrap();
    assert!(mounted.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(disk.clone());
    let text =
        std::fs::read_to_string(&cfg.path).unwrap().replace("stall_timeout", "loop = true\nstall_timeout").replace(
            "max_age = \"1h\"",
            &format!("max_age = \"1h\"\nmax_bytes = 1073741824\ndir = \"{}\"", disk.display()),
        );
    std::fs::write(&cfg.path, text).unwrap();
    let from = time::OffsetDateTime::now_utc() - Duration::from_secs(2);
    let mut cmd = vakt();
    cmd.env("CREDENTIALS_DIRECTORY", &keys).arg("--config").arg(&cfg.path).arg("run");
    let b = BoxProcess::spawn(cmd);
    // the disk fills and the oldest segments are deleted to make room
    let until = Instant::now() + Duration::from_secs(90);
    while !b.log().contains("the oldest unheld segments were deleted") {
        assert!(Instant::now() < until, "no eviction\n{}", b.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!b.log().contains("recording failed"), "{}", b.log());
    // hold everything: nothing can be evicted any more
    let far = rfc(time::OffsetDateTime::now_utc() + Duration::from_secs(3600));
    ok(&cli(
        &cfg.path,
        &keys,
        &["hold", "--from", &rfc(from), "--to", &far, "--until", &far, "--requester", "p", "--reason", "r"],
    ));
    assert!(
        sub.wait_for(
            |m| m.topic.ends_with("/events")
                && m.payload.contains("\"storage_failed\"")
                && m.payload.contains("\"start\""),
            Duration::from_secs(60)
        ),
        "no storage_failed alarm\n{}",
        b.log()
    );
    assert!(
        sub.wait_for(|m| m.topic.ends_with("/status") && m.payload.contains("\"paused\""), Duration::from_secs(10))
    );
    // events keep flowing while recording is paused
    let before = sub.events().len();
    let until = Instant::now() + Duration::from_secs(30);
    while sub.events().len() <= before + 2 {
        assert!(Instant::now() < until, "events stopped\n{}", b.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // released: recording resumes and the alarm ends
    ok(&cli(&cfg.path, &keys, &["hold", "--release", "1", "--requester", "p"]));
    assert!(
        sub.wait_for(
            |m| m.payload.contains("\"storage_failed\"") && m.payload.contains("\"end\""),
            Duration::from_secs(60)
        ),
        "the alarm did not end\n{}",
        b.log()
    );
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// A board whose profile keeps the journal key in a TPM 2.0 (a software TPM here): footage a box
/// recorded is readable after the box is killed, through the same TPM; decommission undefines the
/// TPM's key.
#[test]
fn with_a_tpm_footage_survives_the_process_and_decommission_destroys_the_key() {
    let broker = Mosquitto::start();
    let tpm_state = tempfile::tempdir().unwrap();
    let tpm = vakt_store::tpm::SoftTpm::start(tpm_state.path());
    let (cfg, keys) = record_config(&broker.url(), "");
    let profile = std::fs::read_to_string(repo_root().join("hardware/generic.toml"))
        .unwrap()
        .replace("provider = \"ram\"", &format!("provider = \"tpm2\"\ntcti = \"{}\"", tpm.tcti));
    let profile = profile.replace("device = \"\"", "device = \"/dev/tpmrm0\"");
    std::fs::write(cfg.dir.path().join("board.toml"), profile).unwrap();
    let text = std::fs::read_to_string(&cfg.path).unwrap().replace("stall_timeout", "loop = true\nstall_timeout");
    std::fs::write(&cfg.path, text).unwrap();

    let mut cmd = vakt();
    cmd.arg("--config").arg(&cfg.path).arg("run");
    let b = BoxProcess::spawn(cmd);
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cli(&cfg.path, &keys, &["storage"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["key_protection"], "tpm2", "{v}");
            if v["segments"].as_u64().unwrap_or(0) >= 2 {
                break;
            }
        }
        assert!(Instant::now() < until, "no segments recorded\n{}", b.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(b); // SIGKILL: no clean shutdown

    // the box is gone; the CLI opens the store itself and the TPM still holds the key
    let out = cli(&cfg.path, &keys, &["storage"]);
    ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["segments"].as_u64().unwrap() >= 2, "footage lost with the process: {v}");

    let out_dir = tempfile::tempdir().unwrap();
    let report = out_dir.path().join("d");
    let text = ok(&cli(&cfg.path, &keys, &["decommission", "--output", report.to_str().unwrap()]));
    assert!(text.contains("TPM 2.0 NV index") && text.contains("undefined"), "{text}");
    assert!(!text.contains("NOT destroyed: the journal key"), "{text}");
}
