//! `vakt doctor` against real parts: a real mosquitto (plaintext and TLS with a CA the test makes),
//! real GStreamer capture, real files. Each failing check must say what is wrong and what to do.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

/// A custom board profile at `path`: the generic one with another camera element.
fn custom_board(path: &Path, camera_source: &str) {
    let board = std::fs::read_to_string(repo_root().join("hardware/generic.toml"))
        .unwrap()
        .replace("name = \"generic\"", "name = \"custom-board\"")
        .replace("camera_source = \"v4l2src\"", &format!("camera_source = \"{camera_source}\""));
    std::fs::write(path, board).unwrap();
}

fn doctor(cfg: &Path, extra: &[&str]) -> (i32, String) {
    let o = vakt()
        .args(["--config", cfg.to_str().unwrap(), "doctor", "--camera-timeout", "5", "--broker-timeout", "5"])
        .args(extra)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap_or(-1), text)
}

/// The line of one check (and its fix line), e.g. `line(out, "broker")`.
fn check<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = out.lines().collect();
    let mut found = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.len() > 6 && l[6..].starts_with(&format!("{name} ")) {
            found.push(*l);
            if let Some(next) = lines.get(i + 1).filter(|n| n.trim_start().starts_with("->")) {
                found.push(next);
            }
        }
    }
    found
}

fn verdict(out: &str, name: &str) -> String {
    check(out, name).first().map(|l| l[..4].trim().to_string()).unwrap_or_else(|| panic!("no {name} line in:\n{out}"))
}

/// A CA, and a server certificate for 127.0.0.1 signed by it.
struct Pki {
    ca_pem: String,
    server_pem: String,
    server_key: String,
}

fn pki() -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "vakt test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki { ca_pem: ca_cert.pem(), server_pem: cert.pem(), server_key: key.serialize_pem() }
}

/// mosquitto with a TLS listener on a free port (retried when another test takes the port).
fn tls_broker(p: &Pki) -> Mosquitto {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [("ca.pem", &p.ca_pem), ("server.pem", &p.server_pem), ("server.key", &p.server_key)] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let d = dir.path().display().to_string();
    Mosquitto::with_conf(dir, |port| {
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n\
             cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\ntls_version tlsv1.2\n"
        )
    })
}

#[test]
fn a_healthy_box_passes_every_check_it_can() {
    let p = pki();
    let broker = tls_broker(&p);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &p.ca_pem).unwrap();
    // A custom board whose "camera" is GStreamer's test source: camera:// goes through the
    // profile's element, as on a Raspberry Pi with libcamerasrc.
    custom_board(&dir.path().join("board.toml"), "videotestsrc");
    let cfg = TestConfig::new(
        &format!("mqtts://127.0.0.1:{}", broker.port),
        "camera://",
        &format!(
            "[hardware]\nprofile_file = \"{}\"\n[models]\ndir = \"{}\"\n",
            dir.path().join("board.toml").display(),
            models_dir().display()
        ),
    );
    let text = std::fs::read_to_string(&cfg.path).unwrap().replace(
        &format!("url = \"mqtts://127.0.0.1:{}\"", broker.port),
        &format!("url = \"mqtts://127.0.0.1:{}\"\nca_file = \"{}\"", broker.port, dir.path().join("ca.pem").display()),
    );
    std::fs::write(&cfg.path, text).unwrap();
    let o = vakt().args(["--config", cfg.path.to_str().unwrap(), "provision"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let (code, out) = doctor(&cfg.path, &[]);
    for name in ["config", "identity", "camera", "broker", "disk", "models", "keys"] {
        assert_eq!(verdict(&out, name), "ok", "{name} should pass:\n{out}");
    }
    assert!(check(&out, "camera")[0].contains("camera://: first frame "), "{out}");
    assert!(check(&out, "broker")[0].contains("over TLS (server certificate verified)"), "{out}");
    assert!(check(&out, "config")[0].contains("board.toml"), "{out}");
    // The clock depends on the machine (a CI container's kernel clock may be undisciplined): the
    // exit code follows it and nothing else.
    let clock = verdict(&out, "clock");
    assert_eq!(code, if clock == "ok" { 0 } else { 1 }, "{out}");
}

#[test]
fn every_failing_check_says_what_is_wrong_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    // a state directory that cannot exist (its parent is a file)
    std::fs::write(dir.path().join("not-a-dir"), b"x").unwrap();
    // a model directory with one damaged file
    let models = dir.path().join("models");
    let copy = Command::new("cp").arg("-r").arg(models_dir()).arg(&models).status().unwrap();
    assert!(copy.success());
    let onnx = models.join("nanodet_m_320/nanodet_m_320.onnx");
    let mut bytes = std::fs::read(&onnx).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&onnx, bytes).unwrap();
    let closed = free_port();
    let cfg = TestConfig::new(
        &format!("mqtt://127.0.0.1:{closed}"),
        &dir.path().join("no-such-clip.mp4").display().to_string(),
        &format!("[hardware]\nprofile = \"raspberry-pi-5\"\n[models]\ndir = \"{}\"\n", models.display()),
    );
    let text = std::fs::read_to_string(&cfg.path)
        .unwrap()
        .replace("state_dir = \"state\"", &format!("state_dir = \"{}/not-a-dir/state\"", dir.path().display()));
    std::fs::write(&cfg.path, text).unwrap();

    let (code, out) = doctor(&cfg.path, &["--fault-clock-unsynced"]);
    assert_eq!(code, 1, "{out}");
    let expect = [
        ("camera", "no-such-clip.mp4", "check that source.uri names a readable video file"),
        ("broker", "Connection refused", "nothing listens at that address"),
        ("clock", "not synchronised", "timedatectl set-ntp true"),
        ("disk", "not-a-dir/state", "must be a writable directory"),
        ("models", "nanodet_m_320.onnx has sha256", "models/fetch.sh"),
    ];
    // the Pi profile's OTP provider is not built: a warning that says footage is RAM-only
    assert_eq!(verdict(&out, "keys"), "WARN", "{out}");
    assert!(check(&out, "keys")[0].contains("otp key provider, which this version does not build"), "{out}");
    for (name, what, fix) in expect {
        let lines = check(&out, name);
        assert_eq!(verdict(&out, name), "FAIL", "{name}:\n{out}");
        assert!(lines[0].contains(what), "{name} line should say {what:?}:\n{out}");
        assert!(lines.get(1).is_some_and(|l| l.contains(fix)), "{name} should advise {fix:?}:\n{out}");
    }
    // only the damaged model fails; the others are named as verified nowhere else
    assert_eq!(check(&out, "models").iter().filter(|l| l.starts_with("FAIL")).count(), 1, "{out}");
    // the Pi 5 profile's camera element is not installed here: a warning, since the source is a file
    assert!(out.contains("libcamerasrc is not installed"), "{out}");
}

#[test]
fn an_untrusted_broker_certificate_fails_with_advice() {
    let served = pki();
    let broker = tls_broker(&served);
    let other = pki(); // the box trusts a different CA
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &other.ca_pem).unwrap();
    let cfg = TestConfig::new(&format!("mqtts://127.0.0.1:{}", broker.port), "test://ball", "");
    let text = std::fs::read_to_string(&cfg.path)
        .unwrap()
        .replace("[storage]", &format!("ca_file = \"{}\"\n[storage]", dir.path().join("ca.pem").display()));
    std::fs::write(&cfg.path, text).unwrap();
    let (code, out) = doctor(&cfg.path, &[]);
    assert_eq!(code, 1);
    let lines = check(&out, "broker");
    assert_eq!(verdict(&out, "broker"), "FAIL", "{out}");
    assert!(lines[0].contains("(TLS)") && lines[0].to_lowercase().contains("certificate"), "{out}");
    assert!(lines[1].contains("mqtt.ca_file"), "{out}");
}

#[test]
fn a_missing_board_camera_element_fails_camera_sources() {
    let dir = tempfile::tempdir().unwrap();
    custom_board(&dir.path().join("board.toml"), "vaktnosuchsrc");
    let cfg = TestConfig::new(
        "mqtt://127.0.0.1:1",
        "camera://",
        &format!("[hardware]\nprofile_file = \"{}\"\n", dir.path().join("board.toml").display()),
    );
    let (code, out) = doctor(&cfg.path, &[]);
    assert_eq!(code, 1);
    assert!(check(&out, "elements").iter().any(|l| l.starts_with("FAIL") && l.contains("vaktnosuchsrc")), "{out}");
    let cam = check(&out, "camera");
    assert!(cam[0].starts_with("FAIL") && cam[0].contains("vaktnosuchsrc"), "{out}");
}
