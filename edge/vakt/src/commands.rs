//! Signed commands on `<prefix>/cmd` (edge/docs/design/commands.md). An envelope
//!
//! ```json
//! {"v": 1, "box": "vakt-0042", "cmd": "hold", "args": {...}, "issuer": "police-1",
//!  "nonce": "9f2c...", "expires": "2026-11-23T09:05:00Z", "sig": "<hex Ed25519>"}
//! ```
//!
//! is signed like an event (Ed25519 over the RFC 8785 canonical form without `sig`) by a key in
//! the box's authorised-key list, `state_dir/authorized_keys.json`, each key with a role. The box
//! checks, in this order: JSON and fields, `box`, issuer, signature, expiry (not past, at most
//! `MAX_AHEAD` ahead), nonce (never seen: nonces are kept durably until they expire), role. Every
//! command is answered on `<prefix>/reply` (signed) and audited, accepted or rejected.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use vakt_core::config::Config;

use crate::control::{Request, Service};

/// How far in the future an envelope may expire: bounds how long a captured command stays usable.
pub const MAX_AHEAD_S: i64 = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The police: holds and track listings and exports for cases.
    Police,
    /// The municipality's security unit: also releases holds.
    SecurityUnit,
    /// Key management, and everything else.
    Administrator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Police => "police",
            Role::SecurityUnit => "security_unit",
            Role::Administrator => "administrator",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        serde_json::from_value(Value::String(s.into())).ok()
    }

    /// Which commands the role may give.
    pub fn allows(self, cmd: &str) -> bool {
        const READ: &[&str] = &["status", "holds", "list_tracks"];
        match self {
            Role::Administrator => true,
            Role::SecurityUnit => {
                READ.contains(&cmd)
                    || [
                        "hold",
                        "release",
                        "export",
                        "snapshot",
                        "recording",
                        "retention",
                        "masks",
                        "zones",
                        "lines",
                        "relearn",
                    ]
                    .contains(&cmd)
            }
            Role::Police => READ.contains(&cmd) || ["hold", "export", "snapshot"].contains(&cmd),
        }
    }
}

/// The commands of the contract, every one built.
pub const BUILT: &[&str] = &[
    "status",
    "holds",
    "hold",
    "release",
    "list_tracks",
    "export",
    "snapshot",
    "key_add",
    "key_revoke",
    "keys",
    "recording",
    "retention",
    "masks",
    "zones",
    "lines",
    "relearn",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizedKey {
    pub name: String,
    pub role: Role,
    /// Ed25519 public key, SPKI PEM.
    pub public_key: String,
    pub added_at: String,
    pub added_by: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KeyList {
    pub keys: Vec<AuthorizedKey>,
}

pub fn keys_path(cfg: &Config) -> PathBuf {
    cfg.box_.state_dir.join("authorized_keys.json")
}

pub fn load_keys(path: &Path) -> anyhow::Result<KeyList> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("{}: not a valid key list", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyList::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn save_keys(path: &Path, keys: &KeyList) -> anyhow::Result<()> {
    vakt_core::counters::write_durable(path, &serde_json::to_vec_pretty(keys)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Adds (or replaces) a key; checks the PEM. Used by `vakt keys add` and the `key_add` command.
pub fn add_key(cfg: &Config, name: &str, role: &str, pem: &str, by: &str) -> anyhow::Result<AuthorizedKey> {
    let ok_name =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    anyhow::ensure!(ok_name, "name {name:?}: 1 to 64 of a-z, A-Z, 0-9, '-', '_', '.', ':'");
    let role_v = Role::parse(role)
        .ok_or_else(|| anyhow::anyhow!("role {role:?}: one of police, security_unit, administrator"))?;
    // a valid Ed25519 public key: verifying any signature must fail for the right reason
    if let Err(vakt_identity::IdentityError::BadPublicKey(e)) =
        vakt_identity::verify_signature(pem, b"probe", &[0u8; 64])
    {
        anyhow::bail!("not an Ed25519 public key in PEM: {e}");
    }
    let path = keys_path(cfg);
    let mut list = load_keys(&path)?;
    list.keys.retain(|k| k.name != name);
    let k = AuthorizedKey {
        name: name.into(),
        role: role_v,
        public_key: pem.trim().to_string() + "\n",
        added_at: crate::export::ms_to_rfc3339(crate::record::now_ms()),
        added_by: by.into(),
    };
    list.keys.push(k.clone());
    save_keys(&path, &list)?;
    Ok(k)
}

pub fn revoke_key(cfg: &Config, name: &str) -> anyhow::Result<bool> {
    let path = keys_path(cfg);
    let mut list = load_keys(&path)?;
    let before = list.keys.len();
    list.keys.retain(|k| k.name != name);
    let found = list.keys.len() != before;
    if found {
        save_keys(&path, &list)?;
    }
    Ok(found)
}

/// A rejection: a stable code and words for people.
#[derive(Debug)]
pub struct Rejected {
    pub code: &'static str,
    pub message: String,
}

fn reject(code: &'static str, message: impl Into<String>) -> Rejected {
    Rejected { code, message: message.into() }
}

/// A signed `relearn` leaves this in the state directory; the next start learns the scene
/// reference before it takes the camera, then removes it.
pub const RELEARN_MARKER: &str = "relearn.requested";

/// What the box needs to carry out commands.
pub struct Commands {
    pub cfg: Config,
    pub service: Service,
    pub identity: Option<vakt_identity::Identity>,
    nonces: Mutex<Connection>,
    /// Set when a command changed the configuration: the box restarts to apply it.
    pub restart: std::sync::atomic::AtomicBool,
}

impl Commands {
    pub fn open(cfg: &Config, service: Service, identity: Option<vakt_identity::Identity>) -> anyhow::Result<Commands> {
        let path = cfg.box_.state_dir.join("commands.sqlite3");
        let db = Connection::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS nonce (nonce TEXT PRIMARY KEY, expires_ms INTEGER NOT NULL);",
        )?;
        Ok(Commands {
            cfg: cfg.clone(),
            service,
            identity,
            nonces: Mutex::new(db),
            restart: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Handles one message from `/cmd`; returns the reply for `/reply`.
    pub fn handle(&self, payload: &[u8]) -> Vec<u8> {
        let now = crate::record::now_ms();
        let parsed: Option<Value> = serde_json::from_slice(payload).ok();
        let field = |k: &str| parsed.as_ref().and_then(|v| v.get(k)).and_then(Value::as_str).map(str::to_string);
        let (nonce, cmd, issuer) = (field("nonce"), field("cmd"), field("issuer"));
        let outcome = self.check(payload, now).and_then(|(role, args)| {
            let cmd = cmd.clone().unwrap_or_default();
            // audited before it is carried out; a command that cannot be audited is not carried out
            crate::open_audit(&self.cfg)
                .and_then(|mut a| {
                    a.append(
                        "mqtt",
                        "command.accepted",
                        json!({"cmd": cmd, "issuer": issuer, "role": role, "nonce": nonce}),
                    )
                    .map_err(Into::into)
                })
                .map_err(|e| {
                    reject("failed", format!("cannot write the audit log, so the command was not carried out: {e:#}"))
                })?;
            self.execute(&cmd, &args, issuer.as_deref().unwrap_or(""), nonce.as_deref().unwrap_or(""))
                .map_err(|e| reject("failed", format!("{e:#}")))
        });
        let mut reply = json!({
            "v": 1,
            "box": self.cfg.box_.id,
            "nonce": nonce,
            "cmd": cmd,
            "issuer": issuer,
            "at": crate::export::ms_to_rfc3339(now),
        });
        match outcome {
            Ok(result) => {
                reply["ok"] = true.into();
                reply["result"] = result;
            }
            Err(r) => {
                tracing::warn!(code = r.code, cmd = ?cmd, issuer = ?issuer, "command rejected: {}", r.message);
                let action = if r.code == "failed" { "command.failed" } else { "command.rejected" };
                let _ = crate::open_audit(&self.cfg).and_then(|mut a| {
                    a.append(
                        "mqtt",
                        action,
                        json!({"code": r.code, "message": r.message, "cmd": cmd, "issuer": issuer, "nonce": nonce}),
                    )
                    .map_err(Into::into)
                });
                reply["ok"] = false.into();
                reply["error"] = json!({"code": r.code, "message": r.message});
            }
        }
        let mut v = reply;
        if let Some(id) = &self.identity {
            let sig = hex::encode(id.sign(&crate::signing::canonical(&v)));
            v["sig"] = sig.into();
        }
        serde_json::to_vec(&v).expect("serialisable")
    }

    /// The envelope's checks, in the documented order; the role and args of a good one.
    fn check(&self, payload: &[u8], now: i64) -> Result<(Role, Value), Rejected> {
        let env = vakt_core::command::parse_envelope(payload).map_err(|m| reject("malformed", m.0))?;
        let (bx, cmd, issuer, nonce, expires) =
            (env.box_id.as_str(), env.cmd.as_str(), env.issuer.as_str(), env.nonce.as_str(), env.expires.as_str());
        if bx != self.cfg.box_.id {
            return Err(reject("wrong_box", format!("`box` = {bx:?}: this is {}", self.cfg.box_.id)));
        }
        let keys = load_keys(&keys_path(&self.cfg)).map_err(|e| reject("failed", format!("{e:#}")))?;
        let key = keys.keys.iter().find(|k| k.name == issuer).ok_or_else(|| {
            reject("unknown_issuer", format!("`issuer` = {issuer:?} is not in the box's authorised keys"))
        })?;
        let sig = match &env.sig {
            None => return Err(reject("unsigned", "no `sig`: commands must be signed")),
            Some(Ok(h)) => hex::decode(h).map_err(|_| reject("bad_signature", "`sig` is not hex"))?,
            Some(Err(())) => return Err(reject("bad_signature", "`sig` is not a string")),
        };
        vakt_identity::verify_signature(&key.public_key, &crate::signing::canonical(&env.signed_part), &sig).map_err(
            |_| reject("bad_signature", format!("the signature does not verify with the key of {issuer:?}")),
        )?;
        let exp = crate::export::parse_time("expires", expires).map_err(|e| reject("malformed", format!("{e:#}")))?;
        if exp < now {
            return Err(reject("expired", format!("`expires` = {expires} is past")));
        }
        if exp > now + MAX_AHEAD_S * 1000 {
            return Err(reject("expiry_too_far", format!("`expires` = {expires}: at most {MAX_AHEAD_S} s ahead")));
        }
        let ok_nonce = (16..=64).contains(&nonce.len()) && nonce.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok_nonce {
            return Err(reject("malformed", "`nonce`: 16 to 64 letters, digits or '-'"));
        }
        {
            let db = self.nonces.lock().unwrap();
            let _ = db.execute("DELETE FROM nonce WHERE expires_ms < ?1", [now]);
            let fresh = db
                .execute("INSERT OR IGNORE INTO nonce (nonce, expires_ms) VALUES (?1, ?2)", params![nonce, exp])
                .map_err(|e| reject("failed", format!("cannot record the nonce: {e}")))?;
            if fresh == 0 {
                return Err(reject("replayed", format!("`nonce` {nonce} was used before")));
            }
        }
        if !BUILT.contains(&cmd) {
            return Err(reject("unknown_command", format!("`cmd` = {cmd:?}: one of {}", BUILT.join(", "))));
        }
        if !key.role.allows(cmd) {
            return Err(reject("forbidden", format!("the role {:?} of {issuer:?} may not give {cmd:?}", key.role)));
        }
        Ok((key.role, env.args.clone()))
    }

    /// Writes one setting into `state_dir/overlay.toml` after checking that the whole config with
    /// it loads (a bad value is refused naming the key, and nothing changes); audits
    /// `config.overlay_changed`; the box then restarts to apply it (`restart: true`).
    fn change_config(&self, cmd: &str, args: &Value, issuer: &str) -> anyhow::Result<Value> {
        let config_path = self.cfg.path.clone().ok_or_else(|| anyhow::anyhow!("the box's config file is not known"))?;
        let text = std::fs::read_to_string(&config_path)?;
        let base = config_path.parent().unwrap_or(Path::new("."));
        let overlay_path = vakt_core::config::overlay_path(&text, base)
            .ok_or_else(|| anyhow::anyhow!("the config file is not TOML"))?;
        let mut overlay: toml::Table = match std::fs::read_to_string(&overlay_path) {
            Ok(o) => toml::from_str(&o).with_context(|| format!("{} is not TOML", overlay_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
            Err(e) => return Err(e.into()),
        };
        let arg = |k: &str| args.get(k).cloned().ok_or_else(|| anyhow::anyhow!("`args.{k}`: missing"));
        let to_toml = |v: Value, k: &str| {
            toml::Value::try_from(v).map_err(|e| anyhow::anyhow!("`args.{k}`: cannot be a config value ({e})"))
        };
        let table = |o: &mut toml::Table, name: &str| -> toml::Table {
            match o.remove(name) {
                Some(toml::Value::Table(t)) => t,
                _ => toml::Table::new(),
            }
        };
        match cmd {
            "recording" => {
                let on = arg("on")?.as_bool().ok_or_else(|| anyhow::anyhow!("`args.on`: true or false"))?;
                let mut st = table(&mut overlay, "storage");
                st.insert("record".into(), on.into());
                overlay.insert("storage".into(), st.into());
            }
            "retention" => {
                let v = to_toml(arg("max_age")?, "max_age")?;
                let mut st = table(&mut overlay, "storage");
                st.insert("max_age".into(), v);
                overlay.insert("storage".into(), st.into());
            }
            "masks" => {
                let v = to_toml(arg("masks")?, "masks")?;
                let mut pr = table(&mut overlay, "privacy");
                pr.insert("masks".into(), v);
                overlay.insert("privacy".into(), pr.into());
            }
            "zones" | "lines" => {
                overlay.insert(cmd.into(), to_toml(arg(cmd)?, cmd)?);
            }
            other => anyhow::bail!("{other:?} does not change the configuration"),
        }
        let new_overlay = toml::to_string(&overlay)?;
        // the whole config with the new overlay must load: checked on a copy, in place of the file
        let merged = {
            let mut doc: toml::Table = toml::from_str(&text)?;
            vakt_core::config::merge(&mut doc, toml::from_str(&new_overlay)?);
            toml::to_string(&doc)?
        };
        vakt_core::config::parse(&merged, base).map_err(|e| anyhow::anyhow!("the config would not load: {e}"))?;
        crate::open_audit(&self.cfg)?.append(
            "mqtt",
            "config.overlay_changed",
            json!({"cmd": cmd, "issuer": issuer, "args": args, "overlay": new_overlay}),
        )?;
        vakt_core::counters::write_durable(&overlay_path, new_overlay.as_bytes())?;
        self.restart.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(json!({"overlay": overlay_path, "restart": true}))
    }

    fn execute(&self, cmd: &str, args: &Value, issuer: &str, nonce: &str) -> anyhow::Result<Value> {
        let s = |k: &str| -> anyhow::Result<String> {
            args.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| anyhow::anyhow!("`args.{k}`: missing or not a string"))
        };
        let t = |k: &str| -> anyhow::Result<i64> { crate::export::parse_time(&format!("args.{k}"), &s(k)?) };
        let service_call = |req: Request| -> anyhow::Result<Value> {
            let mut out = Vec::new();
            self.service.handle(req, &mut out)?;
            let v: Value = serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap_or_default())?;
            if v["ok"] == false {
                anyhow::bail!("{}", v["error"].as_str().unwrap_or("failed"));
            }
            Ok(v)
        };
        match cmd {
            "status" => service_call(Request::Status),
            "holds" => service_call(Request::Holds),
            "hold" => service_call(Request::Hold {
                from_ms: t("from")?,
                to_ms: t("to")?,
                until_ms: t("until")?,
                requester: issuer.into(),
                reason: s("reason")?,
            }),
            "release" => {
                let id =
                    args.get("id").and_then(Value::as_u64).ok_or_else(|| anyhow::anyhow!("`args.id`: a hold id"))?;
                let v = service_call(Request::Release { id, requester: issuer.into() })?;
                anyhow::ensure!(!v["released"].is_null(), "`args.id` = {id}: no such hold");
                Ok(v)
            }
            "list_tracks" => {
                service_call(Request::ListTracks { from_ms: t("from")?, to_ms: t("to")?, requester: issuer.into() })
            }
            "export" | "snapshot" => {
                // prepared on the box (redacted, signed manifest) for collection; no picture
                // leaves the box over MQTT. A snapshot is the redacted export of the second that
                // begins at `args.at` (recorded footage: at least one segment old).
                let dir = self.cfg.box_.state_dir.join("exports").join(nonce);
                let (from, to) = if cmd == "snapshot" {
                    let at = t("at")?;
                    (crate::export::ms_to_rfc3339(at), crate::export::ms_to_rfc3339(at + 1000))
                } else {
                    (s("from")?, s("to")?)
                };
                let args = crate::export::ExportArgs {
                    from,
                    to,
                    output: dir.clone(),
                    requester: issuer.into(),
                    keep_track: args.get("keep_track").and_then(Value::as_u64),
                    unmasked: false,
                    reason: args.get("reason").and_then(Value::as_str).map(str::to_string),
                };
                let r = crate::export::export(&self.cfg, &args)?;
                let manifest = std::fs::read(dir.join("manifest.json"))?;
                Ok(json!({"dir": r.dir, "frames": r.frames, "mode": r.mode,
                    "manifest_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&manifest))}))
            }
            "keys" => {
                let list = load_keys(&keys_path(&self.cfg))?;
                Ok(
                    json!({"keys": list.keys.iter().map(|k| json!({"name": k.name, "role": k.role, "added_at": k.added_at})).collect::<Vec<_>>()}),
                )
            }
            "key_add" => {
                let k = add_key(&self.cfg, &s("name")?, &s("role")?, &s("public_key")?, issuer)?;
                crate::open_audit(&self.cfg)?.append(
                    "mqtt",
                    "keys.added",
                    json!({"name": k.name, "role": k.role, "by": issuer}),
                )?;
                Ok(json!({"name": k.name, "role": k.role}))
            }
            "key_revoke" => {
                let name = s("name")?;
                anyhow::ensure!(name != issuer, "an administrator cannot revoke its own key");
                anyhow::ensure!(revoke_key(&self.cfg, &name)?, "no key named {name:?}");
                crate::open_audit(&self.cfg)?.append("mqtt", "keys.revoked", json!({"name": name, "by": issuer}))?;
                Ok(json!({"revoked": name}))
            }
            "recording" | "retention" | "masks" | "zones" | "lines" => self.change_config(cmd, args, issuer),
            "relearn" => {
                // learned at the restart, before the box takes the camera (run.rs)
                let marker = self.cfg.box_.state_dir.join(RELEARN_MARKER);
                crate::open_audit(&self.cfg)?.append("mqtt", "tamper.relearn_requested", json!({"issuer": issuer}))?;
                vakt_core::counters::write_durable(&marker, format!("{issuer}\n").as_bytes())?;
                self.restart.store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(json!({"restart": true}))
            }
            other => anyhow::bail!("{other:?} is not built"),
        }
    }
}
