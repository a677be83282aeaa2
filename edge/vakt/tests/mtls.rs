//! Mutual TLS to the broker and the broker's ACL (issue 6), against a real mosquitto configured
//! with deploy/mosquitto/vakt.conf and acl.example. Certificates come from a test CA (rcgen); the
//! good box certificate is the CA's answer to the box's own `tls.csr`, signed with openssl as a
//! municipality's CA would.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

struct Ca {
    pem: String,
    key_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let key_pem = key.serialize_pem();
        Ca { pem: cert.pem(), key_pem, issuer: rcgen::Issuer::new(p, key) }
    }

    /// A certificate and key for `cn`, valid now unless `expired`, with serial `serial`.
    fn leaf(&self, cn: &str, sans: &[&str], serial: u64, expired: bool) -> (String, String) {
        let mut p = rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        if sans.contains(&"localhost") {
            p.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        }
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.serial_number = Some(rcgen::SerialNumber::from(serial));
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        (p.signed_by(&key, &self.issuer).unwrap().pem(), key.serialize_pem())
    }

    fn crl(&self, revoked: &[u64]) -> String {
        let now = time::OffsetDateTime::now_utc();
        rcgen::CertificateRevocationListParams {
            this_update: now - Duration::from_secs(60),
            next_update: now + Duration::from_secs(86400),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(*s),
                    revocation_time: now - Duration::from_secs(30),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .unwrap()
        .pem()
        .unwrap()
    }
}

/// mosquitto from deploy/mosquitto (vakt.conf with its paths and port replaced, acl.example).
struct Broker {
    m: Mosquitto,
}

impl Broker {
    /// `tls`: (CA, server cert, server key, CRL); None: a plaintext listener only.
    fn start(tls: Option<(&str, &str, &str, &str)>) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let acl = std::fs::read_to_string(repo_root().join("deploy/mosquitto/acl.example")).unwrap();
        std::fs::write(dir.path().join("vakt.acl"), acl).unwrap();
        let template = std::fs::read_to_string(repo_root().join("deploy/mosquitto/vakt.conf")).unwrap();
        if let Some((ca, cert, key, crl)) = tls {
            for (n, t) in [("ca.crt", ca), ("broker.crt", cert), ("broker.key", key), ("ca.crl", crl)] {
                std::fs::write(dir.path().join(n), t).unwrap();
            }
        }
        let m = Mosquitto::with_conf(dir, |port| {
            let listener = match tls {
                Some(_) => template
                    .replace("listener 8883", &format!("listener {port} 127.0.0.1"))
                    .replace("/etc/mosquitto/certs/broker.crt", &format!("{d}/broker.crt"))
                    .replace("/etc/mosquitto/certs/broker.key", &format!("{d}/broker.key"))
                    .replace("/etc/mosquitto/ca/vakt-ca.crt", &format!("{d}/ca.crt"))
                    .replace("/etc/mosquitto/ca/vakt-ca.crl", &format!("{d}/ca.crl"))
                    .replace("/etc/mosquitto/vakt.acl", &format!("{d}/vakt.acl")),
                None => format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
            };
            listener + "\npersistence false\nlog_dest none\n"
        });
        Broker { m }
    }

    fn url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.m.port)
    }

    /// mosquitto_sub/pub arguments for a client with this certificate (None: anonymous).
    fn client_args(&self, who: Option<&(String, String)>, name: &str) -> Vec<String> {
        let mut a =
            vec!["-h".into(), "127.0.0.1".into(), "-p".into(), self.m.port.to_string(), "-q".into(), "1".into()];
        a.extend(["--cafile".into(), self.m.dir().join("ca.crt").display().to_string()]);
        if let Some((cert, key)) = who {
            let (c, k) = (self.m.dir().join(format!("{name}.crt")), self.m.dir().join(format!("{name}.key")));
            std::fs::write(&c, cert).unwrap();
            std::fs::write(&k, key).unwrap();
            a.extend(["--cert".into(), c.display().to_string(), "--key".into(), k.display().to_string()]);
        }
        a
    }

    fn subscribe(&self, who: Option<&(String, String)>, name: &str, topic: &str) -> Sub {
        let mut child = Command::new("mosquitto_sub")
            .args(self.client_args(who, name))
            .args(["-t", topic, "-F", "%t %p"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        std::thread::sleep(Duration::from_millis(700));
        Sub { child, lines }
    }

    fn publish(&self, who: &(String, String), name: &str, topic: &str, msg: &str) -> bool {
        Command::new("mosquitto_pub")
            .args(self.client_args(Some(who), name))
            .args(["-t", topic, "-m", msg])
            .status()
            .unwrap()
            .success()
    }
}

struct Sub {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Sub {
    fn wait_for(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        self.wait_for_after(0, pred, timeout)
    }

    /// Like `wait_for`, among the lines after the first `since`.
    fn wait_for_after(&self, since: usize, pred: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.lines.lock().unwrap().iter().skip(since).any(|l| pred(l)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A provisioned box config for `url`, trusting `ca_pem`.
fn box_config(url: &str, ca_pem: &str) -> TestConfig {
    let cfg = TestConfig::new(url, "test://ball?width=160&height=120&fps=15", "");
    let ca = cfg.dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let text = std::fs::read_to_string(&cfg.path)
        .unwrap()
        .replace("keep_alive = \"5s\"", &format!("keep_alive = \"5s\"\nca_file = \"{}\"", ca.display()));
    std::fs::write(&cfg.path, text).unwrap();
    let out = vakt().arg("--config").arg(&cfg.path).arg("provision").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    cfg
}

fn identity(cfg: &TestConfig) -> PathBuf {
    cfg.state_dir().join("identity")
}

/// The CA signs the box's own certificate request with openssl, as a municipality's CA would.
fn sign_csr(ca: &Ca, id: &Path, serial: u64) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("ca.crt"), &ca.pem).unwrap();
    std::fs::write(tmp.path().join("ca.key"), &ca.key_pem).unwrap();
    // extensions make it an X.509 v3 certificate, which rustls requires
    std::fs::write(
        tmp.path().join("ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let ok = Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-set_serial", &serial.to_string(), "-extfile"])
        .arg(tmp.path().join("ext.cnf"))
        .arg("-in")
        .arg(id.join("tls.csr"))
        .arg("-CA")
        .arg(tmp.path().join("ca.crt"))
        .arg("-CAkey")
        .arg(tmp.path().join("ca.key"))
        .arg("-out")
        .arg(id.join("tls.crt"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "openssl could not sign the box's CSR");
}

/// Runs the box a while; true if the consumer saw its `online` status.
fn box_connects(cfg: &TestConfig, consumer: &Sub, wait: Duration) -> (bool, String) {
    let since = consumer.lines.lock().unwrap().len();
    let b = BoxProcess::start(&cfg.path);
    let ok = consumer.wait_for_after(since, |l| l.contains("/box-test/status") && l.contains("\"online\""), wait);
    let log = b.log();
    drop(b);
    (ok, log)
}

#[test]
fn only_a_box_with_a_valid_certificate_reaches_the_broker_and_the_acl_holds() {
    let ca = Ca::new("vakt test CA");
    let server = ca.leaf("broker", &["localhost"], 2, false);
    let police = ca.leaf("police-consumer", &[], 10, false);
    let commander = ca.leaf("security-commander", &[], 11, false);
    let stolen = ca.leaf("box-test", &[], 666, false);
    let expired = ca.leaf("box-test", &[], 12, true);
    let crl = ca.crl(&[666]);
    let broker = Broker::start(Some((&ca.pem, &server.0, &server.1, &crl)));
    let consumer = broker.subscribe(Some(&police), "police", "vakt/#");

    // the good box: its own key, the CA's answer to its CSR
    let good = box_config(&broker.url(), &ca.pem);
    sign_csr(&ca, &identity(&good), 100);
    let b = BoxProcess::start(&good.path);
    assert!(
        consumer.wait_for(|l| l.contains("/box-test/status") && l.contains("\"online\""), Duration::from_secs(20)),
        "the good box did not connect:\n{}",
        b.log()
    );
    assert!(consumer.wait_for(|l| l.contains("/box-test/events"), Duration::from_secs(20)), "{}", b.log());
    assert!(b.log().contains("mutual TLS"), "{}", b.log());
    drop(b);

    // ACL, with the box's own certificate and key: its own topics only
    let box_cred = (
        std::fs::read_to_string(identity(&good).join("tls.crt")).unwrap(),
        std::fs::read_to_string(identity(&good).join("tls.key")).unwrap(),
    );
    let box_cmd = broker.subscribe(Some(&box_cred), "box", "vakt/test-site/box-test/cmd");
    assert!(broker.publish(&box_cred, "box", "vakt/test-site/box-b/events", "{\"forged\":\"as box-b\"}"));
    assert!(broker.publish(&box_cred, "box", "vakt/test-site/box-test/events", "{\"own\":1}"));
    assert!(consumer.wait_for(|l| l.contains("\"own\":1"), Duration::from_secs(5)), "control message lost");
    assert!(!consumer.wait_for(|l| l.contains("as box-b"), Duration::from_secs(1)), "box A published as box B");
    // a consumer cannot command; a commander can
    assert!(broker.publish(&police, "police", "vakt/test-site/box-test/cmd", "{\"from\":\"consumer\"}"));
    assert!(broker.publish(&commander, "commander", "vakt/test-site/box-test/cmd", "{\"from\":\"commander\"}"));
    assert!(
        box_cmd.wait_for(|l| l.contains("commander"), Duration::from_secs(5)),
        "the commander's command did not arrive"
    );
    assert!(!box_cmd.wait_for(|l| l.contains("consumer"), Duration::from_secs(1)), "a consumer wrote /cmd");
    // anonymous: no certificate, no connection
    let anon = Command::new("mosquitto_sub")
        .args(broker.client_args(None, "anon"))
        .args(["-t", "vakt/#", "-C", "1", "-W", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!anon.success(), "an anonymous client subscribed");

    // a stolen box's revoked certificate, and an expired one: no connection
    for (name, cred) in [("revoked", &stolen), ("expired", &expired)] {
        let cfg = box_config(&broker.url(), &ca.pem);
        std::fs::write(identity(&cfg).join("tls.crt"), &cred.0).unwrap();
        std::fs::write(identity(&cfg).join("tls.key"), &cred.1).unwrap();
        let (ok, log) = box_connects(&cfg, &consumer, Duration::from_secs(5));
        assert!(!ok, "a box with a {name} certificate connected");
        assert!(log.contains("cannot reach the MQTT broker"), "{name}: {log}");
    }

    // the box trusting another CA: it refuses the broker
    let other = Ca::new("another CA");
    let cfg = box_config(&broker.url(), &other.pem);
    sign_csr(&ca, &identity(&cfg), 101);
    let (ok, log) = box_connects(&cfg, &consumer, Duration::from_secs(5));
    assert!(!ok && log.contains("cannot reach the MQTT broker"), "wrong CA: {log}");
}

#[test]
fn a_box_refuses_a_broker_with_the_wrong_name_or_without_tls() {
    let ca = Ca::new("vakt test CA");
    let wrong_name = ca.leaf("broker", &["broker.elsewhere.example"], 3, false);
    let crl = ca.crl(&[]);
    for broker in [Broker::start(Some((&ca.pem, &wrong_name.0, &wrong_name.1, &crl))), Broker::start(None)] {
        let cfg = box_config(&broker.url(), &ca.pem);
        sign_csr(&ca, &identity(&cfg), 100);
        let b = BoxProcess::start(&cfg.path);
        std::thread::sleep(Duration::from_secs(4));
        let log = b.log();
        assert!(log.contains("cannot reach the MQTT broker"), "{log}");
        assert!(!log.contains("connected to the MQTT broker"), "{log}");
    }
}
