//! Signed commands over a real mosquitto (issue 6): envelopes signed by issuers whose keys the
//! box authorised with roles; every command answered on /reply and audited.

mod support;

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use support::*;

/// An issuer: an Ed25519 key of its own (made with the box's identity code).
struct Issuer {
    name: &'static str,
    id: vakt_identity::Identity,
    _dir: tempfile::TempDir,
}

impl Issuer {
    fn new(name: &'static str) -> Issuer {
        let dir = tempfile::tempdir().unwrap();
        vakt_identity::Identity::provision(dir.path(), "issuer", false).unwrap();
        Issuer { name, id: vakt_identity::Identity::load(dir.path()).unwrap(), _dir: dir }
    }

    fn pem_file(&self, dir: &Path) -> std::path::PathBuf {
        let p = dir.join(format!("{}.pub", self.name));
        std::fs::write(&p, self.id.public_key_pem().unwrap()).unwrap();
        p
    }

    /// A signed envelope; `tweak` changes it before signing.
    fn envelope(&self, cmd: &str, args: Value, nonce: &str, expires_in: i64) -> Value {
        let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(expires_in);
        let mut v = json!({"v": 1, "box": "box-test", "cmd": cmd, "args": args, "issuer": self.name, "nonce": nonce,
            "expires": expires.format(&time::format_description::well_known::Rfc3339).unwrap()});
        let mut buf = Vec::new();
        v.serialize(&mut serde_json::Serializer::with_formatter(&mut buf, canon_json::CanonicalFormatter::new()))
            .unwrap();
        v["sig"] = hex::encode(self.id.sign(&buf)).into();
        v
    }
}

fn send(port: u16, msg: &str) {
    let ok = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", "vakt/test-site/box-test/cmd", "-m", msg])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// The newest reply for `nonce`, once there are more than `before` of them.
fn reply_after(sub: &Subscriber, nonce: &str, before: usize) -> Value {
    let found = |m: &Msg| m.topic.ends_with("/reply") && m.payload.contains(nonce);
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while sub.all().iter().filter(|m| found(m)).count() <= before {
        assert!(std::time::Instant::now() < until, "no reply for {nonce}");
        std::thread::sleep(Duration::from_millis(50));
    }
    sub.all().iter().rev().find(|m| found(m)).unwrap().json()
}

fn reply(sub: &Subscriber, nonce: &str) -> Value {
    reply_after(sub, nonce, 0)
}

fn vakt_ok(cfg: &TestConfig, args: &[&str]) {
    let out = vakt().arg("--config").arg(&cfg.path).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `vakt keys add` for the issuer under its name, with `role`.
fn authorise(cfg: &TestConfig, issuer: &Issuer, role: &str) {
    let key = issuer.pem_file(cfg.dir.path());
    vakt_ok(cfg, &["keys", "add", "--name", issuer.name, "--role", role, "--key", key.to_str().unwrap()]);
}

fn replies(sub: &Subscriber, nonce: &str) -> usize {
    sub.all().iter().filter(|m| m.topic.ends_with("/reply") && m.payload.contains(nonce)).count()
}

#[test]
fn commands_are_authenticated_authorised_answered_and_audited() {
    let broker = Mosquitto::start();
    let cfg = TestConfig::new(&broker.url(), "test://ball?width=160&height=120&fps=15", "");
    vakt_ok(&cfg, &["provision"]);
    let (police, admin, stranger) = (Issuer::new("police-1"), Issuer::new("admin-1"), Issuer::new("police-1"));
    authorise(&cfg, &police, "police");
    authorise(&cfg, &admin, "administrator");
    let box_pub = std::fs::read_to_string(cfg.state_dir().join("identity/signing.pub")).unwrap();

    let sub = Subscriber::start(broker.port, "vakt/+/+/reply");
    let audit_sub = Subscriber::start(broker.port, "vakt/+/+/audit");
    let mut b = BoxProcess::start(&cfg.path);
    std::thread::sleep(Duration::from_secs(3)); // connected and subscribed to /cmd

    let now = time::OffsetDateTime::now_utc();
    let rfc = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    let hold_args = json!({"from": rfc(now - Duration::from_secs(600)), "to": rfc(now), "until": rfc(now + Duration::from_secs(86400)), "reason": "case K-7"});

    // a valid hold from the police: executed
    let ok = police.envelope("hold", hold_args.clone(), "nonce-hold-000001", 120);
    send(broker.port, &ok.to_string());
    let r = reply(&sub, "nonce-hold-000001");
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["result"]["hold"]["id"].as_u64().is_some(), "{r}");
    // the answer is signed by the box
    let mut unsigned = r.clone();
    let sig = hex::decode(unsigned.as_object_mut().unwrap().remove("sig").unwrap().as_str().unwrap()).unwrap();
    let mut buf = Vec::new();
    unsigned
        .serialize(&mut serde_json::Serializer::with_formatter(&mut buf, canon_json::CanonicalFormatter::new()))
        .unwrap();
    vakt_identity::verify_signature(&box_pub, &buf, &sig).expect("the reply is signed by the box");

    let rejected = |msg: String, nonce: &str, code: &str| {
        let before = replies(&sub, nonce);
        send(broker.port, &msg);
        let r = reply_after(&sub, nonce, before);
        assert_eq!((r["ok"].clone(), r["error"]["code"].clone()), (json!(false), json!(code)), "{r}");
    };
    // the same envelope again
    rejected(ok.to_string(), "nonce-hold-000001", "replayed");
    // a snapshot is a redacted export: this box detects no people (and records nothing), so it
    // refuses rather than send a picture it cannot mask
    let snap = police.envelope("snapshot", json!({"at": rfc(now - Duration::from_secs(60))}), "nonce-snapshot-01", 120);
    send(broker.port, &snap.to_string());
    let r = reply(&sub, "nonce-snapshot-01");
    assert_eq!(r["error"]["code"], "failed", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("redacted export"), "{r}");
    // unsigned
    let mut v = police.envelope("hold", hold_args.clone(), "nonce-unsigned-01", 120);
    v.as_object_mut().unwrap().remove("sig");
    rejected(v.to_string(), "nonce-unsigned-01", "unsigned");
    // signed by another key under the police's name
    rejected(
        stranger.envelope("hold", hold_args.clone(), "nonce-wrongkey-01", 120).to_string(),
        "nonce-wrongkey-01",
        "bad_signature",
    );
    // the police may not manage keys
    let key_args = json!({"name": "x-1", "role": "police", "public_key": box_pub});
    rejected(
        police.envelope("key_add", key_args.clone(), "nonce-forbidden-1", 120).to_string(),
        "nonce-forbidden-1",
        "forbidden",
    );
    // expired, and expiring too far ahead
    rejected(police.envelope("holds", json!({}), "nonce-expired-001", -5).to_string(), "nonce-expired-001", "expired");
    rejected(
        police.envelope("holds", json!({}), "nonce-toofar-0001", 3600).to_string(),
        "nonce-toofar-0001",
        "expiry_too_far",
    );
    // a field changed after signing
    let mut v = police.envelope("holds", json!({}), "nonce-tampered-01", 120);
    v["cmd"] = "release".into();
    rejected(v.to_string(), "nonce-tampered-01", "bad_signature");
    // malformed, named: no `expires`
    rejected(
        json!({"v": 1, "box": "box-test", "cmd": "holds", "issuer": "police-1", "nonce": "nonce-malformed-1"})
            .to_string(),
        "nonce-malformed-1",
        "malformed",
    );
    // the administrator revokes the police key; the police are then unknown
    send(broker.port, &admin.envelope("key_revoke", json!({"name": "police-1"}), "nonce-revoke-0001", 120).to_string());
    assert_eq!(reply(&sub, "nonce-revoke-0001")["ok"], true);
    rejected(
        police.envelope("holds", json!({}), "nonce-after-rev-1", 120).to_string(),
        "nonce-after-rev-1",
        "unknown_issuer",
    );

    // the audit log reaches the broker too, entry by entry, through the outbox
    let forwarded = |m: &Msg| m.payload.contains("\"keys.revoked\"");
    assert!(audit_sub.wait_for(forwarded, Duration::from_secs(10)), "the audit log was not forwarded");
    b.signal("TERM");
    assert_eq!(b.wait(Duration::from_secs(20)), Some(0), "{}", b.log());
    let audit = std::fs::read_to_string(cfg.state_dir().join("audit.log")).unwrap();
    let count = |a: &str| audit.lines().filter(|l| l.contains(&format!("\"{a}\""))).count();
    assert_eq!(count("command.accepted"), 3, "hold, snapshot and key_revoke");
    assert_eq!(count("command.failed"), 1, "the snapshot");
    assert_eq!(count("command.rejected"), 9);
    assert_eq!(count("hold.created"), 1);
    assert_eq!(count("keys.revoked"), 1);
    let out = vakt().arg("--config").arg(&cfg.path).args(["keys", "list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("admin-1") && !listed.contains("police-1"), "{listed}");
    // a technician may revoke the last administrator at the box, and is told what that means
    let out = vakt().arg("--config").arg(&cfg.path).args(["keys", "revoke", "--name", "admin-1"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no administrator key is left"), "{out:?}");
    let out = vakt().arg("--config").arg(&cfg.path).args(["keys", "revoke", "--name", "admin-1"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--name \"admin-1\": no such key"), "{out:?}");
    // every forwarded entry is a line of the log, as written; none twice
    let seqs: Vec<u64> = audit_sub.all().iter().map(|m| m.json()["seq"].as_u64().unwrap()).collect();
    for m in audit_sub.all() {
        assert!(audit.lines().any(|l| l == m.payload), "not a line of the log: {}", m.payload);
    }
    let mut unique = seqs.clone();
    unique.dedup();
    assert_eq!(unique, seqs, "forwarded twice or out of order");
}

/// Configuration commands: checked against the whole config before anything changes, written to
/// the overlay, audited; the box restarts (exit 75, systemd starts it again) and runs with them.
#[test]
fn a_configuration_command_is_checked_applied_after_a_restart_and_audited() {
    let broker = Mosquitto::start();
    let cfg = TestConfig::new(&broker.url(), "test://smpte?width=320&height=240&fps=15", "");
    vakt_ok(&cfg, &["provision"]);
    let (unit, police) = (Issuer::new("unit-1"), Issuer::new("police-1"));
    authorise(&cfg, &unit, "security_unit");
    authorise(&cfg, &police, "police");
    let sub = Subscriber::start(broker.port, "vakt/#");
    let mut b = BoxProcess::start(&cfg.path);
    std::thread::sleep(Duration::from_secs(3));

    // the police may not change the configuration; a value out of range changes nothing
    send(broker.port, &police.envelope("retention", json!({"max_age": "2h"}), "nonce-cfg-police-1", 120).to_string());
    assert_eq!(reply(&sub, "nonce-cfg-police-1")["error"]["code"], "forbidden");
    send(broker.port, &unit.envelope("retention", json!({"max_age": "30d"}), "nonce-cfg-toolong", 120).to_string());
    let r = reply(&sub, "nonce-cfg-toolong");
    assert_eq!(r["error"]["code"], "failed", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("storage.max_age"), "{r}");
    assert!(!cfg.state_dir().join("overlay.toml").exists());

    // a good one: answered, then the box restarts to apply it
    send(broker.port, &unit.envelope("retention", json!({"max_age": "2h"}), "nonce-cfg-retention", 120).to_string());
    let r = reply(&sub, "nonce-cfg-retention");
    assert_eq!((r["ok"].clone(), r["result"]["restart"].clone()), (json!(true), json!(true)), "{r}");
    assert_eq!(b.wait(Duration::from_secs(20)), Some(75), "{}", b.log());
    let since = sub.all().len();
    let mut b = BoxProcess::start(&cfg.path);
    let applied = |m: &Msg| m.topic.ends_with("/status") && m.payload.contains("\"retention\":\"2h\"");
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while !sub.all().iter().skip(since).any(applied) {
        assert!(std::time::Instant::now() < until, "the new retention is not in force\n{}", b.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // re-learning the tamper reference: at the restart, before the box takes the camera (colour
    // bars: a view commissioning accepts; the dark ball pattern it refuses, and the box says so)
    send(broker.port, &unit.envelope("relearn", json!({}), "nonce-cfg-relearn01", 120).to_string());
    assert_eq!(reply(&sub, "nonce-cfg-relearn01")["ok"], true);
    assert_eq!(b.wait(Duration::from_secs(20)), Some(75), "{}", b.log());
    let mut b = BoxProcess::start(&cfg.path);
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !b.log().contains("connected to the MQTT broker") {
        assert!(std::time::Instant::now() < until, "{}", b.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!cfg.state_dir().join("relearn.requested").exists(), "the request outlived the restart");
    let log = b.log();
    assert!(!log.contains("re-learning the scene reference failed"), "{log}");
    b.signal("TERM");
    assert_eq!(b.wait(Duration::from_secs(20)), Some(0), "{}", b.log());
    let audit = std::fs::read_to_string(cfg.state_dir().join("audit.log")).unwrap();
    assert_eq!(audit.lines().filter(|l| l.contains("\"tamper.relearn_requested\"")).count(), 1);
    assert_eq!(audit.lines().filter(|l| l.contains("\"tamper.reference.learned\"")).count(), 1, "{audit}");
    assert_eq!(audit.lines().filter(|l| l.contains("\"config.overlay_changed\"")).count(), 1);
    // the restarted box audits the configuration it now runs
    assert!(audit.lines().filter(|l| l.contains("\"config.changed\"")).count() >= 2, "{audit}");
}
