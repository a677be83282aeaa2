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
    /// `KEYFILE` (any box) or `BOX=KEYFILE` (only messages whose `box` is BOX).
    pub trust: Vec<String>,
    pub ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for a broker that requires one.
    pub cert: Option<(PathBuf, PathBuf)>,
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
    pub fn take(&mut self, payload: &[u8], keys: &[(Option<String>, String)], out: &mut impl Write) -> Vec<String> {
        self.received += 1;
        let mut say = Vec::new();
        // the keys that may speak for the box the message names
        let named = serde_json::from_slice::<Value>(payload).ok().and_then(|v| v["box"].as_str().map(str::to_string));
        let usable: Vec<String> = keys
            .iter()
            .filter(|(b, _)| b.is_none() || b.as_deref() == named.as_deref())
            .map(|(_, k)| k.clone())
            .collect();
        let (verdict, v) = verify(payload, &usable);
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
    for t in &a.trust {
        let (bx, p) = match t.split_once('=') {
            Some((b, p)) if !b.is_empty() && !b.contains('/') => (Some(b.to_string()), PathBuf::from(p)),
            _ => (None, PathBuf::from(t)),
        };
        let pem = std::fs::read_to_string(&p)
            .map_err(|e| crate::UsageError(format!("--trust {t}: cannot read {} ({e})", p.display())))?;
        if !pem.contains("BEGIN PUBLIC KEY") {
            return Err(
                crate::UsageError(format!("--trust {t}: not a PEM public key (a box's identity/signing.pub)")).into()
            );
        }
        keys.push((bx, pem));
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
        let client_auth = match &a.cert {
            None => None,
            Some((c, k)) => {
                let read = |p: &PathBuf, flag: &str| {
                    std::fs::read(p)
                        .map_err(|e| crate::UsageError(format!("--{flag} {}: cannot read ({e})", p.display())))
                };
                Some((read(c, "cert")?, read(k, "key")?))
            }
        };
        opts.set_transport(Transport::Tls(TlsConfiguration::Simple { ca, alpn: None, client_auth }));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_bound_to_a_box_verifies_only_that_box() {
        let dir = tempfile::tempdir().unwrap();
        vakt_identity::Identity::provision(dir.path(), "box-a", false).unwrap();
        let id = vakt_identity::Identity::load(dir.path()).unwrap();
        let pem = id.public_key_pem().unwrap();
        let e: vakt_core::event::Event = serde_json::from_value(json!({"v":1,"id":"01J","box":"box-a","site":"s",
            "camera":"c","kind":"motion","phase":"start","zone":null,"started_at":"2026-11-23T08:00:00.000Z",
            "ended_at":null,"at":"2026-11-23T08:00:00.000Z","seq":1,"boot":1,"bbox":null,"area":0.0,
            "media_time_s":0.0,"onset_media_time_s":0.0,"attrs":{}}))
        .unwrap();
        let p = crate::signing::payload(&e, Some(&id));
        let mut sink = Vec::new();
        let mut bound_elsewhere = Tally::default();
        let said = bound_elsewhere.take(&p, &[(Some("box-b".into()), pem.clone())], &mut sink);
        assert_eq!(bound_elsewhere.rejected, 1, "{said:?}");
        let mut bound_here = Tally::default();
        bound_here.take(&p, &[(Some("box-a".into()), pem.clone())], &mut sink);
        let mut any = Tally::default();
        any.take(&p, &[(None, pem)], &mut sink);
        assert_eq!((bound_here.verified, any.verified), (1, 1));
    }
}
