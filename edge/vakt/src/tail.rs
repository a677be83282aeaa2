//! `vakt events tail`: the reference consumer for the police's and the security unit's
//! integrations (edge/docs/ref/cli.md). It subscribes to events topics, verifies each message's
//! signature against trusted box keys, de-duplicates by (`box`, `seq`), tracks gaps per box and
//! boot, and closes gaps that a late copy fills or that an `events_dropped` report explains.
//! Verified messages go to stdout, one per line, exactly as received; everything else to stderr.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::{Value, json};

use crate::signing::{Verdict, verify};
use vakt_core::config::{MqttScheme, parse_mqtt_url};

pub struct TailArgs {
    pub url: String,
    pub topic: String,
    pub trust: Vec<PathBuf>,
    pub ca: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub client_id: Option<String>,
}

/// What one box has shown so far.
#[derive(Default)]
struct BoxTrack {
    boot: u64,
    /// highest seq seen in `boot`
    top: u64,
    /// missing seq values not explained by a report
    open: BTreeSet<u64>,
    /// seq values a report said were dropped on the box
    dropped: BTreeSet<u64>,
}

#[derive(Default)]
pub struct Tally {
    pub received: u64,
    pub verified: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub dropped_reported: u64,
    seen: HashSet<(String, u64)>,
    boxes: BTreeMap<String, BoxTrack>,
}

impl Tally {
    /// One message; returns what to say on stderr, if anything.
    pub fn take(&mut self, payload: &[u8], keys: &[String], out: &mut impl Write) -> Vec<String> {
        self.received += 1;
        let mut say = Vec::new();
        let (verdict, v) = verify(payload, keys);
        let (b, seq, boot) = match &v {
            Some(v) => (
                v["box"].as_str().unwrap_or("?").to_string(),
                v["seq"].as_u64().unwrap_or(0),
                v["boot"].as_u64().unwrap_or(0),
            ),
            None => ("?".into(), 0, 0),
        };
        if verdict != Verdict::Verified {
            self.rejected += 1;
            let why = match verdict {
                Verdict::Unsigned => "unsigned",
                Verdict::BadSignature => "bad signature",
                _ => "not JSON",
            };
            say.push(format!("REJECTED box={b} seq={seq}: {why}"));
            return say;
        }
        let v = v.expect("verified messages parse");
        if !self.seen.insert((b.clone(), seq)) {
            self.duplicates += 1;
            return say;
        }
        self.verified += 1;
        let _ = out.write_all(payload);
        let _ = out.write_all(b"\n");
        let t = self.boxes.entry(b.clone()).or_default();
        if v["kind"] == "events_dropped" {
            for pair in v["attrs"]["ranges"].as_array().into_iter().flatten() {
                let (lo, hi) = (pair[0].as_u64().unwrap_or(1), pair[1].as_u64().unwrap_or(0));
                for s in lo..=hi.min(lo.saturating_add(10_000_000)) {
                    t.dropped.insert(s);
                    t.open.remove(&s);
                }
                self.dropped_reported += hi.saturating_sub(lo) + 1;
                say.push(format!("DROPPED box={b} seq {lo}..{hi} on the box ({})", v["attrs"]["reason"]));
            }
        }
        if boot > t.boot || t.top == 0 {
            // a new boot: seq jumps to the next reserved block (events.md, rule 3)
            if t.top != 0 {
                say.push(format!("BOOT box={b} boot={boot} starts at seq {seq}"));
            }
            t.boot = boot;
            t.top = seq;
        } else if boot == t.boot && seq > t.top {
            let missing: Vec<u64> = (t.top + 1..seq).filter(|s| !t.dropped.contains(s)).collect();
            if let (Some(lo), Some(hi)) = (missing.first(), missing.last()) {
                say.push(format!("GAP box={b} boot={boot} seq {lo}..{hi} missing"));
                t.open.extend(missing);
            }
            t.top = seq;
        } else if t.open.remove(&seq) {
            say.push(format!("FILLED box={b} seq={seq} arrived late"));
        }
        say
    }

    pub fn summary(&self) -> Value {
        let gaps: BTreeMap<&String, Vec<[u64; 2]>> = self
            .boxes
            .iter()
            .filter(|(_, t)| !t.open.is_empty())
            .map(|(b, t)| {
                let v: Vec<u64> = t.open.iter().copied().collect();
                (b, crate::outbox::ranges(&v).into_iter().map(|(a, z)| [a, z]).collect())
            })
            .collect();
        json!({
            "received": self.received,
            "verified": self.verified,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "dropped_on_box": self.dropped_reported,
            "gaps_open": gaps,
        })
    }
}

pub async fn tail(a: TailArgs) -> anyhow::Result<Value> {
    let mut keys = Vec::new();
    for p in &a.trust {
        let pem = std::fs::read_to_string(p)
            .map_err(|e| crate::UsageError(format!("--trust {}: cannot read ({e})", p.display())))?;
        if !pem.contains("BEGIN PUBLIC KEY") {
            return Err(crate::UsageError(format!(
                "--trust {}: not a PEM public key (a box's identity/signing.pub)",
                p.display()
            ))
            .into());
        }
        keys.push(pem);
    }
    let (scheme, host, port) =
        parse_mqtt_url(&a.url).map_err(|e| crate::UsageError(format!("--url {:?}: {e}", a.url)))?;
    let persistent = a.client_id.is_some();
    let id = a.client_id.clone().unwrap_or_else(|| format!("vakt-tail-{}", std::process::id()));
    let mut opts = MqttOptions::new(id, host, port);
    opts.set_clean_session(!persistent);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(256 * 1024, 256 * 1024);
    if scheme == MqttScheme::Tls {
        let path = a.ca.clone().unwrap_or_else(|| PathBuf::from("/etc/ssl/certs/ca-certificates.crt"));
        let ca = std::fs::read(&path)
            .map_err(|e| crate::UsageError(format!("--ca {}: cannot read ({e})", path.display())))?;
        opts.set_transport(Transport::Tls(TlsConfiguration::Simple { ca, alpn: None, client_auth: None }));
    }
    let (client, mut el) = AsyncClient::new(opts, 10);
    let mut tally = Tally::default();
    let deadline = a.duration.map(|d| tokio::time::Instant::now() + d);
    let stdout = std::io::stdout();
    loop {
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, el.poll()).await.ok(),
                None => Some(el.poll().await),
            }
        };
        let ev = tokio::select! {
            e = next => e,
            _ = tokio::signal::ctrl_c() => None,
        };
        match ev {
            None => break,
            Some(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => {
                client.subscribe(&a.topic, QoS::AtLeastOnce).await?;
                eprintln!("subscribed to {} at {}", a.topic, a.url);
            }
            Some(Ok(MqttEvent::Incoming(Packet::Publish(p)))) => {
                for line in tally.take(&p.payload, &keys, &mut stdout.lock()) {
                    eprintln!("{line}");
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                eprintln!("broker {}: {e}; retrying", a.url);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Ok(tally.summary())
}
