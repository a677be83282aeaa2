//! `vakt decommission --output DIR`: the controlled shutdown Trelleborg lacked. With the box
//! stopped it exports every held range (redacted, signed), the events the broker never
//! acknowledged (from the durable outbox) and the whole audit log into DIR, then
//! crypto-erases the recording store (segments, epoch keys, journals, index) and says, in a
//! signed report, what it destroyed and what it could not. If any export fails, nothing is
//! destroyed. Afterwards `state_dir/decommissioned` lets package purge remove the state.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use vakt_core::config::Config;

use crate::export::{ExportArgs, ms_to_rfc3339};
use crate::record::now_ms;

pub const REPORT: &str = "decommission.json";
/// The events the broker had not acknowledged, one JSON message per line.
pub const UNSENT: &str = "unsent-events.jsonl";

pub fn marker(cfg: &Config) -> PathBuf {
    cfg.box_.state_dir.join("decommissioned")
}

pub fn decommission(cfg: &Config, output: &Path, requester: &str) -> anyhow::Result<Value> {
    if std::os::unix::net::UnixStream::connect(crate::control::socket_path(cfg)).is_ok() {
        return Err(crate::UsageError(
            "the box is running: stop it first (systemctl stop vakt), then decommission".into(),
        )
        .into());
    }
    if output.exists() && std::fs::read_dir(output).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(crate::UsageError(format!(
            "--output {}: exists and is not an empty directory; give a new directory (on removable media)",
            output.display()
        ))
        .into());
    }
    let identity = vakt_identity::Identity::load(&cfg.box_.state_dir.join("identity"))
        .context("the decommission report is signed with the box's key; the identity cannot be loaded")?;
    std::fs::create_dir_all(output).with_context(|| format!("cannot create {}", output.display()))?;
    crate::open_audit(cfg)?.append(
        "cli",
        "decommission.started",
        json!({"requester": requester, "output": output.display().to_string()}),
    )?;

    // 1. every hold in force, exported first
    let holds = {
        let client = crate::control::Client::connect(cfg)?;
        let (v, _) = client.call(&crate::control::Request::Holds)?;
        v["holds"].as_array().cloned().unwrap_or_default()
    };
    let mut exported = Vec::new();
    let mut unreadable = Vec::new();
    for h in &holds {
        let id = h["id"].as_u64().unwrap_or(0);
        let dir = output.join(format!("hold-{id}"));
        let args = ExportArgs {
            from: ms_to_rfc3339(h["from_ms"].as_i64().unwrap_or(0)),
            to: ms_to_rfc3339(h["to_ms"].as_i64().unwrap_or(0)),
            output: dir.clone(),
            requester: h["requester"].as_str().unwrap_or(requester).to_string(),
            keep_track: None,
            unmasked: false,
            reason: None,
        };
        match crate::export::export(cfg, &args) {
            Ok(s) => exported.push(json!({"hold": id, "dir": dir.display().to_string(), "frames": s.frames})),
            Err(e) if format!("{e:#}").contains("no recording covers") => {
                // nothing readable is held (footage expired, or keys lost with a RAM provider)
                unreadable.push(json!({"hold": id, "why": format!("{e:#}")}));
            }
            Err(e) => {
                return Err(e.context(format!(
                    "exporting hold {id} failed: nothing was destroyed; fix the cause and run decommission again"
                )));
            }
        }
    }

    // 2. events the broker never acknowledged, from the durable outbox, exported as they would
    //    have been sent (one message per line)
    let _lock = crate::run::lock_state_dir(&cfg.box_.state_dir)?;
    let outbox_file = cfg.box_.state_dir.join(crate::outbox::Outbox::FILE);
    let unsent = if outbox_file.exists() {
        let ob =
            crate::outbox::Outbox::open(&cfg.box_.state_dir, u64::MAX / 2, std::time::Duration::from_secs(1 << 40))?;
        // the events (the ONVIF dialect's copies of them are not exported)
        let rows: Vec<_> = ob.all()?.into_iter().filter(|r| r.topic.is_none()).collect();
        // drops recorded but not yet reported in an events_dropped message: named in the report
        let unreported: Vec<Value> = ob
            .pending_drops()?
            .iter()
            .map(|d| json!({"reason": d.reason, "count": d.count, "ranges": d.ranges.iter().map(|(a, z)| [a, z]).collect::<Vec<_>>()}))
            .collect();
        let mut text = Vec::new();
        for r in &rows {
            text.extend_from_slice(&r.payload);
            text.push(b'\n');
        }
        vakt_core::counters::write_durable(&output.join(UNSENT), &text)?;
        drop(ob);
        for suffix in ["", "-wal", "-shm"] {
            let p = cfg.box_.state_dir.join(format!("{}{suffix}", crate::outbox::Outbox::FILE));
            if p.exists() {
                std::fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
        json!({"file": UNSENT, "count": rows.len(), "sha256": hex::encode(Sha256::digest(&text)), "dropped_unreported": unreported})
    } else {
        json!({"file": null, "count": 0})
    };

    // 3. destroy the store
    let (store, _) = crate::record::open_store(cfg, "cli")?;
    let protection = store.key_protection();
    let destroyed = store.destroy_all().context("crypto-erasing the recording store failed")?;
    crate::open_audit(cfg)?.append(
        "cli",
        "decommission.completed",
        json!({"requester": requester, "destroyed": destroyed, "holds_exported": exported.len(), "unsent_events": unsent["count"]}),
    )?;

    // 4. the audit log, whole, after the last entry
    let audit = crate::audit_path(cfg);
    let audit_copy = output.join("audit.log");
    std::fs::copy(&audit, &audit_copy)
        .with_context(|| format!("cannot copy {} to {}", audit.display(), audit_copy.display()))?;
    let audit_sha = hex::encode(Sha256::digest(std::fs::read(&audit_copy)?));

    let report = json!({
        "format": "vakt-decommission/1",
        "box": cfg.box_.id,
        "site": cfg.box_.site,
        "signing_key": identity.key_id(),
        "at": ms_to_rfc3339(now_ms()),
        "requester": requester,
        "key_protection": protection,
        "destroyed": {
            "segments": destroyed.segments,
            "bytes": destroyed.bytes,
            "epoch_keys": destroyed.epoch_keys,
            "holds": destroyed.holds,
            "provider": destroyed.provider,
        },
        "holds_exported": exported,
        "holds_not_readable": unreadable,
        "audit_log": {"file": "audit.log", "sha256": audit_sha},
        "not_destroyed": [
            "the box's identity (state_dir/identity): revoke its certificate at the broker's CA, then remove it with the state directory",
            "the audit log on the box (a copy is in this directory)",
        ],
        "unsent_events": unsent,
    });
    let text = serde_json::to_vec_pretty(&report)?;
    vakt_core::counters::write_durable(&output.join(REPORT), &text)?;
    vakt_core::counters::write_durable(
        &output.join("decommission.sig"),
        format!("{}\n", hex::encode(identity.sign(&text))).as_bytes(),
    )?;
    vakt_core::counters::write_durable(&output.join(crate::export::PUBLIC_KEY), identity.public_key_pem()?.as_bytes())?;
    vakt_core::counters::write_durable(&marker(cfg), format!("{}\n", ms_to_rfc3339(now_ms())).as_bytes())?;
    Ok(report)
}
