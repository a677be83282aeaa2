//! The local control socket (`state_dir/control.sock`, mode 0600 in a 0700 directory): how the
//! CLI reaches the store of a running box, whose footage keys may exist only in its memory
//! (provider `ram`). When no box runs, the CLI takes the state directory's lock, opens the store
//! itself and serves the same requests in-process, so both paths run the same code. Every request
//! that reveals or keeps footage is audited before it takes effect (G5).
//!
//! Protocol: one request per connection, a JSON line; the answer is a JSON line
//! (`{"ok": true, ...}` or `{"ok": false, "error": "..."}`), and for `export` the records follow
//! as frames: a type byte (1 video, 2 track boxes, 0 end), a u32 length, the payload.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use vakt_core::config::Config;
use vakt_store::Store;
use vakt_store::segment::Record;

use crate::record::now_ms;

pub fn socket_path(cfg: &Config) -> PathBuf {
    cfg.box_.state_dir.join("control.sock")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    ListTracks {
        from_ms: i64,
        to_ms: i64,
        requester: String,
    },
    Hold {
        from_ms: i64,
        to_ms: i64,
        until_ms: i64,
        requester: String,
        reason: String,
    },
    Release {
        id: u64,
        requester: String,
    },
    Holds,
    Export {
        from_ms: i64,
        to_ms: i64,
        requester: String,
        mode: String,
        keep_track: Option<u64>,
        reason: Option<String>,
    },
    ExportDone {
        requester: String,
        output: String,
        manifest_sha256: String,
        frames: u64,
    },
}

/// Serves requests for the process that holds the store.
#[derive(Clone)]
pub struct Service {
    pub store: Arc<Mutex<Store>>,
    pub cfg: Config,
    pub actor: &'static str,
}

impl Service {
    fn audit(&self, action: &str, details: Value) -> anyhow::Result<u64> {
        let entry = crate::open_audit(&self.cfg)?.append(self.actor, action, details)?;
        Ok(entry.seq)
    }

    /// Answers one request on `out`.
    pub fn handle(&self, req: Request, out: &mut dyn Write) -> anyhow::Result<()> {
        match self.answer(req, out) {
            Ok(()) => Ok(()),
            Err(e) => {
                writeln!(out, "{}", json!({"ok": false, "error": format!("{e:#}")}))?;
                Ok(())
            }
        }
    }

    fn answer(&self, req: Request, out: &mut dyn Write) -> anyhow::Result<()> {
        let now = now_ms();
        match req {
            Request::Status => {
                let s = self.store.lock().unwrap();
                let (segments, bytes) = s.usage()?;
                let all = s.segments(i64::MIN, i64::MAX)?;
                writeln!(
                    out,
                    "{}",
                    json!({"ok": true, "segments": segments, "bytes": bytes, "max_bytes": s.config().max_bytes,
                        "retention_s": s.config().max_age.as_secs(), "key_protection": s.key_protection(),
                        "oldest_ms": all.first().map(|x| x.start_ms), "newest_ms": all.last().map(|x| x.end_ms),
                        "holds": s.holds(now)?})
                )?;
            }
            Request::Holds => {
                let holds = self.store.lock().unwrap().holds(now)?;
                writeln!(out, "{}", json!({"ok": true, "holds": holds}))?;
            }
            Request::Hold { from_ms, to_ms, until_ms, requester, reason } => {
                let mut s = self.store.lock().unwrap();
                let covered = s.segments(from_ms, to_ms)?.len();
                // checked first, audited, then made (G5)
                Store::check_hold(from_ms, to_ms, until_ms, now)?;
                let seq = self.audit(
                    "hold.created",
                    json!({"from_ms": from_ms, "to_ms": to_ms, "until_ms": until_ms, "requester": requester,
                        "reason": reason, "segments": covered}),
                )?;
                let h = s.hold(from_ms, to_ms, until_ms, &requester, &reason, now)?;
                writeln!(
                    out,
                    "{}",
                    json!({"ok": true, "hold": h, "segments": covered, "audit_seq": seq, "key_protection": s.key_protection()})
                )?;
            }
            Request::Release { id, requester } => {
                let mut s = self.store.lock().unwrap();
                let seq = self.audit("hold.released", json!({"id": id, "requester": requester}))?;
                let h = s.release(id)?;
                writeln!(out, "{}", json!({"ok": true, "released": h, "audit_seq": seq}))?;
            }
            Request::ListTracks { from_ms, to_ms, requester } => {
                let ids: Vec<u64> = self.store.lock().unwrap().segments(from_ms, to_ms)?.iter().map(|s| s.id).collect();
                let seq = self.audit(
                    "export.tracks_listed",
                    json!({"from_ms": from_ms, "to_ms": to_ms, "requester": requester, "segments": ids}),
                )?;
                let mut tracks = TrackList::new(&self.cfg);
                for id in ids {
                    let plain = self.store.lock().unwrap().read(id)?;
                    tracks.add_segment(&plain);
                }
                writeln!(out, "{}", json!({"ok": true, "tracks": tracks.finish(), "audit_seq": seq}))?;
            }
            Request::Export { from_ms, to_ms, requester, mode, keep_track, reason } => {
                let segs = self.store.lock().unwrap().segments(from_ms, to_ms)?;
                if segs.is_empty() {
                    anyhow::bail!(
                        "no recording covers {} to {}",
                        crate::export::ms_to_rfc3339(from_ms),
                        crate::export::ms_to_rfc3339(to_ms)
                    );
                }
                let seq = self.audit(
                    if mode == "unmasked" { "export.unmasked" } else { "export.started" },
                    json!({"from_ms": from_ms, "to_ms": to_ms, "requester": requester, "mode": mode,
                        "keep_track": keep_track, "reason": reason,
                        "segments": segs.iter().map(|s| s.id).collect::<Vec<_>>()}),
                )?;
                writeln!(out, "{}", json!({"ok": true, "segments": segs, "audit_seq": seq, "box": self.cfg.box_.id}))?;
                for s in &segs {
                    let plain = self.store.lock().unwrap().read(s.id)?;
                    for r in &plain.records {
                        write_record(out, r)?;
                    }
                }
                out.write_all(&[0, 0, 0, 0, 0])?;
            }
            Request::ExportDone { requester, output, manifest_sha256, frames } => {
                let seq = self.audit(
                    "export.completed",
                    json!({"requester": requester, "output": output, "manifest_sha256": manifest_sha256, "frames": frames}),
                )?;
                writeln!(out, "{}", json!({"ok": true, "audit_seq": seq}))?;
            }
        }
        out.flush()?;
        Ok(())
    }
}

fn write_record(out: &mut dyn Write, r: &Record) -> std::io::Result<()> {
    match r {
        Record::Video { pts_ns, duration_ns, key, data } => {
            out.write_all(&[1])?;
            out.write_all(&((17 + data.len()) as u32).to_le_bytes())?;
            out.write_all(&pts_ns.to_le_bytes())?;
            out.write_all(&duration_ns.to_le_bytes())?;
            out.write_all(&[*key as u8])?;
            out.write_all(data)
        }
        Record::Meta(json) => {
            out.write_all(&[2])?;
            out.write_all(&(json.len() as u32).to_le_bytes())?;
            out.write_all(json)
        }
    }
}

/// Reads the next record of an export stream; `None` at its end.
pub fn read_record(r: &mut dyn Read) -> anyhow::Result<Option<Record>> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).context("the export stream ended early")?;
    let n = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).context("the export stream ended early")?;
    Ok(match head[0] {
        0 => None,
        1 if n >= 17 => Some(Record::Video {
            pts_ns: u64::from_le_bytes(body[0..8].try_into().expect("8 bytes")),
            duration_ns: u64::from_le_bytes(body[8..16].try_into().expect("8 bytes")),
            key: body[16] != 0,
            data: body[17..].to_vec(),
        }),
        2 => Some(Record::Meta(body)),
        t => anyhow::bail!("the export stream is damaged (record type {t})"),
    })
}

/// The tracks of a range as `--list-tracks` shows them: ids, classes, times and zones; no images.
struct TrackList {
    zones: Vec<(String, vakt_core::geometry::Polygon)>,
    tracks: std::collections::BTreeMap<u64, TrackSummary>,
}

#[derive(Serialize)]
struct TrackSummary {
    track: u64,
    class: String,
    first_ms: i64,
    last_ms: i64,
    sightings: u64,
    zones: std::collections::BTreeSet<String>,
}

impl TrackList {
    fn new(cfg: &Config) -> TrackList {
        TrackList {
            zones: cfg.zones.iter().map(|z| (z.name.clone(), z.polygon.clone())).collect(),
            tracks: Default::default(),
        }
    }

    fn add_segment(&mut self, plain: &vakt_store::SegmentPlain) {
        // media time → wall time: the segment's first frame was recorded at its start
        let first_pts = plain.records.iter().find_map(|r| match r {
            Record::Video { pts_ns, .. } => Some(*pts_ns as f64 / 1e9),
            _ => None,
        });
        for r in &plain.records {
            let Record::Meta(json) = r else { continue };
            let Ok(v) = serde_json::from_slice::<Value>(json) else { continue };
            let t = v["t"].as_f64().unwrap_or(0.0);
            let at = plain.info.start_ms + ((t - first_pts.unwrap_or(t)) * 1000.0).round() as i64;
            for o in v["objects"].as_array().into_iter().flatten() {
                let (Some(track), None) = (o["track"].as_u64(), o["face_of"].as_array()) else { continue };
                if !o["face_of"].is_null() {
                    continue;
                }
                let b: Vec<f64> = o["box"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect();
                let e = self.tracks.entry(track).or_insert_with(|| TrackSummary {
                    track,
                    class: o["class"].as_str().unwrap_or("?").to_string(),
                    first_ms: at,
                    last_ms: at,
                    sightings: 0,
                    zones: Default::default(),
                });
                e.first_ms = e.first_ms.min(at);
                e.last_ms = e.last_ms.max(at);
                e.sightings += 1;
                if b.len() == 4 {
                    // the foot point: where a person stands
                    let (x, y) = (b[0] + b[2] / 2.0, b[1] + b[3]);
                    for (name, poly) in &self.zones {
                        if poly.contains(x, y) {
                            e.zones.insert(name.clone());
                        }
                    }
                }
            }
        }
    }

    fn finish(self) -> Vec<TrackSummary> {
        self.tracks.into_values().collect()
    }
}

/// Serves the socket on its own thread until the process ends. A stale socket file from an
/// earlier run is replaced (the state directory's lock proves no other box runs).
pub fn serve(service: Service) -> anyhow::Result<PathBuf> {
    let path = socket_path(&service.cfg);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).with_context(|| format!("cannot create {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    std::thread::Builder::new().name("control".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let svc = service.clone();
            let _ = std::thread::Builder::new().name("control-conn".into()).spawn(move || {
                if let Err(e) = serve_one(&svc, conn) {
                    tracing::warn!("control socket: {e:#}");
                }
            });
        }
    })?;
    Ok(path)
}

fn serve_one(svc: &Service, conn: UnixStream) -> anyhow::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut out = std::io::BufWriter::new(conn);
    match serde_json::from_str::<Request>(&line) {
        Ok(req) => svc.handle(req, &mut out),
        Err(e) => {
            writeln!(out, "{}", json!({"ok": false, "error": format!("bad request: {e}")}))?;
            Ok(())
        }
    }
}

/// A connection to whoever holds the store: the running box, or this process.
pub struct Client {
    cfg: Config,
    local: Option<(Service, std::fs::File)>,
}

impl Client {
    /// The running box's socket if it answers; otherwise the store opened here (with recovery)
    /// under the state directory's lock.
    pub fn connect(cfg: &Config) -> anyhow::Result<Client> {
        if UnixStream::connect(socket_path(cfg)).is_ok() {
            return Ok(Client { cfg: cfg.clone(), local: None });
        }
        // files made here must stay readable by the box: run as the state directory's owner
        {
            use std::os::unix::fs::MetadataExt;
            let owner = std::fs::metadata(&cfg.box_.state_dir).map(|m| m.uid()).ok();
            // SAFETY: geteuid has no preconditions
            let me = unsafe { libc::geteuid() };
            if let Some(owner) = owner
                && owner != me
            {
                return Err(crate::UsageError(format!(
                    "no box is running, and the state directory {} belongs to another user (uid {owner}): run this as that user, e.g. `sudo -u vakt vakt ...`, so the files it writes stay the box's",
                    cfg.box_.state_dir.display()
                ))
                .into());
            }
        }
        let lock = crate::run::lock_state_dir(&cfg.box_.state_dir).map_err(|e| {
            anyhow::anyhow!("{e:#}; and its control socket {} does not answer", socket_path(cfg).display())
        })?;
        let (store, _) = crate::record::open_store(cfg, "cli")?;
        if store.key_protection() == "ram" {
            tracing::warn!(
                "no box is running, and this box keeps footage keys in RAM only: footage recorded by an earlier run cannot be read"
            );
        }
        let svc = Service { store: Arc::new(Mutex::new(store)), cfg: cfg.clone(), actor: "cli" };
        Ok(Client { cfg: cfg.clone(), local: Some((svc, lock)) })
    }

    /// Sends a request; returns the answer (an error for `ok: false`) and the stream, for `export`.
    pub fn call(&self, req: &Request) -> anyhow::Result<(Value, Box<dyn Read + Send>)> {
        let stream: UnixStream = match &self.local {
            None => {
                let mut s = UnixStream::connect(socket_path(&self.cfg))
                    .with_context(|| format!("cannot reach the box at {}", socket_path(&self.cfg).display()))?;
                writeln!(s, "{}", serde_json::to_string(req)?)?;
                s
            }
            Some((svc, _)) => {
                let (a, b) = UnixStream::pair()?;
                let (svc, req) = (svc.clone(), req.clone());
                std::thread::spawn(move || {
                    let mut out = std::io::BufWriter::new(b);
                    let _ = svc.handle(req, &mut out);
                });
                a
            }
        };
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let v: Value = serde_json::from_str(&line).with_context(|| format!("the box answered {line:?}"))?;
        if v["ok"] != json!(true) {
            anyhow::bail!("{}", v["error"].as_str().unwrap_or("the box refused the request"));
        }
        Ok((v, Box::new(reader)))
    }
}
