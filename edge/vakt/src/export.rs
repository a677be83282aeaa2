//! `vakt export`, `vakt export --list-tracks`, `vakt hold` and `vakt verify-export`: footage leaves
//! the box only as an audited, signed clip, redacted unless `--unmasked --reason`. The decrypted
//! segments reach the capture pipeline through a FIFO, so plaintext never touches a file system;
//! the people in them are masked from the track boxes recorded with them (the same results the
//! live masker had, so `--keep-track` ids are those `--list-tracks` shows), motion from the
//! decoded pictures, and whole frames where those results are too old (D5). Design:
//! `edge/docs/design/ring-buffer.md`, "Export and decommission".

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use vakt_core::config::Config;
use vakt_core::detect::ObjectClass;
use vakt_core::redaction::{DetectorResult, MaskPlan, Sighting};
use vakt_core::source::SourceSpec;
use vakt_media::{CaptureMsg, ClipWriter, EncodedUnit, RedactedFrame, Redactor};
use vakt_store::segment::Record;

use crate::control::{Client, Request};
use crate::redaction::{Pairing, RedactionStage};

pub const CLIP: &str = "clip.mp4";
pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
pub const PUBLIC_KEY: &str = "box-signing.pub";

pub fn parse_time(flag: &str, v: &str) -> anyhow::Result<i64> {
    let t = OffsetDateTime::parse(v, &Rfc3339).map_err(|e| {
        crate::UsageError(format!("{flag} {v:?}: not an RFC 3339 time such as 2026-11-23T14:05:00Z ({e})"))
    })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

pub fn ms_to_rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map(vakt_core::event::rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

fn range(from: &str, to: &str) -> anyhow::Result<(i64, i64)> {
    let (f, t) = (parse_time("--from", from)?, parse_time("--to", to)?);
    if t <= f {
        return Err(crate::UsageError(format!("--to {to} is not after --from {from}")).into());
    }
    Ok((f, t))
}

fn requester_ok(r: &str) -> anyhow::Result<()> {
    if r.trim().is_empty() || r.len() > 200 || r.chars().any(char::is_control) {
        return Err(crate::UsageError(format!(
            "--requester {r:?}: name who asked (e.g. police:4711 or a case number), one line, at most 200 characters"
        ))
        .into());
    }
    Ok(())
}

pub struct ExportArgs {
    pub from: String,
    pub to: String,
    pub output: PathBuf,
    pub requester: String,
    pub keep_track: Option<u64>,
    pub unmasked: bool,
    pub reason: Option<String>,
}

/// `vakt export --list-tracks`: the tracks of a range (audited).
pub fn list_tracks(cfg: &Config, from: &str, to: &str, requester: &str) -> anyhow::Result<Value> {
    let (f, t) = range(from, to)?;
    requester_ok(requester)?;
    let client = Client::connect(cfg)?;
    let (v, _) = client.call(&Request::ListTracks { from_ms: f, to_ms: t, requester: requester.into() })?;
    Ok(v)
}

/// `vakt hold`: keeps a range beyond retention until `until` (audited).
pub fn hold(cfg: &Config, from: &str, to: &str, until: &str, requester: &str, reason: &str) -> anyhow::Result<Value> {
    let (f, t) = range(from, to)?;
    let u = parse_time("--until", until)?;
    requester_ok(requester)?;
    if reason.trim().is_empty() {
        return Err(crate::UsageError("--reason: say why the footage is held (a case number)".into()).into());
    }
    let client = Client::connect(cfg)?;
    let (v, _) = client.call(&Request::Hold {
        from_ms: f,
        to_ms: t,
        until_ms: u,
        requester: requester.into(),
        reason: reason.into(),
    })?;
    Ok(v)
}

pub fn release(cfg: &Config, id: u64, requester: &str) -> anyhow::Result<Value> {
    requester_ok(requester)?;
    let (v, _) = Client::connect(cfg)?.call(&Request::Release { id, requester: requester.into() })?;
    Ok(v)
}

pub fn status(cfg: &Config) -> anyhow::Result<Value> {
    let (v, _) = Client::connect(cfg)?.call(&Request::Status)?;
    Ok(v)
}

/// What an export wrote.
pub struct ExportSummary {
    pub dir: PathBuf,
    pub frames: u64,
    pub fully_masked: u64,
    pub segments: usize,
    pub mode: &'static str,
}

pub fn export(cfg: &Config, args: &ExportArgs) -> anyhow::Result<ExportSummary> {
    let (from_ms, to_ms) = range(&args.from, &args.to)?;
    requester_ok(&args.requester)?;
    let mode = match (args.unmasked, args.keep_track) {
        (true, Some(_)) => {
            return Err(crate::UsageError("--unmasked and --keep-track exclude each other".into()).into());
        }
        (true, None) => "unmasked",
        (false, Some(_)) => "subject_access",
        (false, None) => "redacted",
    };
    if args.unmasked && args.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(crate::UsageError(
            "--unmasked shows everyone in the footage (static masks only): give --reason TEXT, which is audited".into(),
        )
        .into());
    }
    if args.output.exists() && std::fs::read_dir(&args.output).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(crate::UsageError(format!(
            "--output {}: exists and is not an empty directory; give a new directory",
            args.output.display()
        ))
        .into());
    }
    if !cfg.detect.enabled && mode != "unmasked" {
        return Err(crate::UsageError(
            "a redacted export needs the recorded track boxes, and `[detect] enabled = false`: every frame would be masked whole".into(),
        )
        .into());
    }
    let identity = vakt_identity::Identity::load(&cfg.box_.state_dir.join("identity"))
        .context("an export is signed with the box's key; run `vakt provision` first")?;
    std::fs::create_dir_all(&args.output).with_context(|| format!("cannot create {}", args.output.display()))?;

    let client = Client::connect(cfg)?;
    let (head, mut stream) = client.call(&Request::Export {
        from_ms,
        to_ms,
        requester: args.requester.clone(),
        mode: mode.into(),
        keep_track: args.keep_track,
        reason: args.reason.clone(),
    })?;
    let mut units = Vec::new();
    let mut results = Vec::new();
    while let Some(r) = crate::control::read_record(&mut stream)? {
        match r {
            Record::Video { pts_ns, duration_ns, key, data } => {
                units.push(EncodedUnit { pts_ns, duration_ns, key, data })
            }
            Record::Meta(json) => {
                if let Some(d) = parse_detections(&json) {
                    results.push(d);
                }
            }
        }
    }
    drop(stream);
    // a range that starts inside a segment: its first key frame is the segment's start
    let first_key = units.iter().position(|u| u.key).unwrap_or(units.len());
    units.drain(..first_key);
    if units.is_empty() {
        anyhow::bail!("the recording of that range holds no complete picture");
    }
    let clip = args.output.join(CLIP);
    let (frames, fully_masked) = render(cfg, units, results, args.keep_track, mode == "unmasked", &clip)?;
    let clip_bytes = std::fs::read(&clip).with_context(|| format!("cannot read {}", clip.display()))?;
    let segments = head["segments"].as_array().cloned().unwrap_or_default();
    let manifest = json!({
        "format": "vakt-export/1",
        "box": cfg.box_.id,
        "site": cfg.box_.site,
        "camera": cfg.source.camera,
        "signing_key": identity.key_id(),
        "from": ms_to_rfc3339(from_ms),
        "to": ms_to_rfc3339(to_ms),
        "requester": args.requester,
        "reason": args.reason,
        "masking": mode,
        "mask_mode": cfg.redact.mode.as_str(),
        "keep_track": args.keep_track,
        "audit_seq": head["audit_seq"],
        "created": vakt_core::event::rfc3339(OffsetDateTime::now_utc()),
        "segments": segments.iter().map(|s| json!({
            "id": s["id"], "start": ms_to_rfc3339(s["start_ms"].as_i64().unwrap_or(0)),
            "end": ms_to_rfc3339(s["end_ms"].as_i64().unwrap_or(0)), "frames": s["frames"], "sha256": s["sha256"],
        })).collect::<Vec<_>>(),
        "clip": {"file": CLIP, "bytes": clip_bytes.len(), "sha256": hex::encode(Sha256::digest(&clip_bytes)),
            "frames": frames, "frames_masked_whole": fully_masked},
    });
    let text = serde_json::to_vec_pretty(&manifest)?;
    let sig = identity.sign(&text);
    write_file(&args.output.join(MANIFEST), &text)?;
    write_file(&args.output.join(SIGNATURE), format!("{}\n", hex::encode(sig)).as_bytes())?;
    write_file(&args.output.join(PUBLIC_KEY), identity.public_key_pem()?.as_bytes())?;
    client.call(&Request::ExportDone {
        requester: args.requester.clone(),
        output: args.output.display().to_string(),
        manifest_sha256: hex::encode(Sha256::digest(&text)),
        frames,
    })?;
    Ok(ExportSummary { dir: args.output.clone(), frames, fully_masked, segments: segments.len(), mode })
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    vakt_core::counters::write_durable(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// The track boxes of one detector run, as the recorder stored them.
fn parse_detections(json: &[u8]) -> Option<DetectorResult> {
    let v: Value = serde_json::from_slice(json).ok()?;
    let t = v["t"].as_f64()?;
    let mut sightings = Vec::new();
    for o in v["objects"].as_array()? {
        let b: Vec<f32> = o["box"].as_array()?.iter().filter_map(|x| x.as_f64().map(|x| x as f32)).collect();
        let vel: Vec<f32> = o["velocity"].as_array()?.iter().filter_map(|x| x.as_f64().map(|x| x as f32)).collect();
        if b.len() != 4 || vel.len() != 2 {
            return None;
        }
        let bbox = [b[0], b[1], b[2], b[3]];
        if o["face_of"].is_null() {
            let class = ObjectClass::parse(o["class"].as_str()?)?;
            sightings.push(Sighting::object(o["track"].as_u64(), class, bbox, (vel[0], vel[1])));
        } else {
            sightings.push(Sighting::face(o["face_of"].as_u64(), bbox, (vel[0], vel[1])));
        }
    }
    Some(DetectorResult { t, sightings })
}

/// Decodes the units through the box's capture (static masks again, analysis and full frames),
/// masks people from the recorded results and motion, and writes the clip. Returns (frames,
/// frames masked whole).
fn render(
    cfg: &Config,
    units: Vec<EncodedUnit>,
    mut results: Vec<DetectorResult>,
    keep_track: Option<u64>,
    unmasked: bool,
    clip: &Path,
) -> anyhow::Result<(u64, u64)> {
    let private = tempfile::Builder::new().prefix("vakt-export-").tempdir()?;
    let fifo = private.path().join("footage.mkv");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid NUL-terminated path
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot create the export FIFO");
    }
    let first_pts = units[0].pts_ns as f64 / 1e9;
    let writer_path = fifo.clone();
    let writer = std::thread::spawn(move || {
        let mut it = units.into_iter();
        vakt_media::record::write_matroska(&writer_path, &mut it)
    });
    results.sort_by(|a, b| a.t.total_cmp(&b.t));
    let outcome = (|| -> anyhow::Result<(u64, u64)> {
        let mut capture = crate::analyze::offline_capture(cfg, SourceSpec::File { path: fifo.clone() }, true)?;
        // motion only: the people come from the recorded results
        let mut no_detect = cfg.clone();
        no_detect.detect.enabled = false;
        no_detect.tamper.enabled = false;
        let mut analyzer = crate::analyze::offline_analyzer(&no_detect, OffsetDateTime::UNIX_EPOCH, None)?;
        let mut stage = RedactionStage::new(cfg, keep_track, Pairing::Strict);
        let mut plain = Redactor::new(cfg.redact.mode, cfg.privacy.polygons());
        let partial = clip.with_extension("mp4.partial");
        let mut writer: Option<ClipWriter> = None;
        let (mut frames, mut whole) = (0u64, 0u64);
        let mut shift: Option<f64> = None;
        let mut next_result = 0usize;
        let mut emit = |r: RedactedFrame, full: bool| -> anyhow::Result<()> {
            let w = match &mut writer {
                Some(w) => w,
                None => writer.insert(
                    ClipWriter::create(&partial, r.width(), r.height(), r.frame_rate().unwrap_or((15, 1)))
                        .map_err(anyhow::Error::msg)?,
                ),
            };
            w.push(&r).map_err(anyhow::Error::msg)?;
            frames += 1;
            whole += full as u64;
            Ok(())
        };
        for msg in capture.receiver().clone().iter() {
            match msg {
                CaptureMsg::Frame(f) => {
                    let t = f.media_time_s();
                    // recorded media time → this decode's media time
                    let shift = *shift.get_or_insert(t - first_pts);
                    let a = analyzer.process(&f)?;
                    if unmasked {
                        continue;
                    }
                    while results.get(next_result).is_some_and(|r| r.t + shift <= t + 1e-9) {
                        let mut r = results[next_result].clone();
                        r.t += shift;
                        stage.add_result(&r);
                        next_result += 1;
                    }
                    for d in stage.analysed(f.index(), t, crate::redact::motion_input(&a.motion))? {
                        let full = matches!(d.plan, MaskPlan::Full(_));
                        emit(d.frame, full)?;
                    }
                }
                CaptureMsg::Full(f) => {
                    if unmasked {
                        let empty = MaskPlan::Regions { motion: Vec::new(), keep: Vec::new(), people: Vec::new() };
                        emit(plain.redact(f, &empty), false)?;
                    } else {
                        for d in stage.full(f)? {
                            let full = matches!(d.plan, MaskPlan::Full(_));
                            emit(d.frame, full)?;
                        }
                    }
                }
                CaptureMsg::EndOfStream => break,
                CaptureMsg::Failed(e) => anyhow::bail!("decoding the recorded footage failed: {e}"),
                CaptureMsg::SignalLost { reason, .. } => {
                    anyhow::bail!("decoding the recorded footage failed: {reason}")
                }
                CaptureMsg::SignalRestored { .. } => {}
            }
        }
        if !unmasked {
            for d in stage.finish()? {
                let full = matches!(d.plan, MaskPlan::Full(_));
                emit(d.frame, full)?;
            }
        }
        capture.stop();
        let w = writer.ok_or_else(|| anyhow::anyhow!("no frame of the recorded footage could be decoded"))?;
        w.finish().map_err(anyhow::Error::msg)?;
        std::fs::rename(&partial, clip).with_context(|| format!("cannot write {}", clip.display()))?;
        Ok((frames, whole))
    })();
    if !writer.is_finished() {
        // the capture never opened the FIFO: open it ourselves so the writer's open returns
        let _ = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo);
    }
    let remuxed = writer.join().map_err(|_| anyhow::anyhow!("the remuxer panicked"))?;
    let result = outcome?;
    remuxed.map_err(anyhow::Error::msg)?;
    Ok(result)
}

use std::os::unix::fs::OpenOptionsExt;

/// `vakt verify-export DIR [--trust KEY.pub]`: the signature over the manifest, then the clip's
/// hash. Without `--trust` the box's own key (`state_dir/identity`) is the trusted one.
pub fn verify(dir: &Path, trust: Option<&Path>, cfg: Option<&Config>) -> anyhow::Result<Value> {
    let manifest = std::fs::read(dir.join(MANIFEST)).with_context(|| format!("{}: no {MANIFEST}", dir.display()))?;
    let sig_hex =
        std::fs::read_to_string(dir.join(SIGNATURE)).with_context(|| format!("{}: no {SIGNATURE}", dir.display()))?;
    let sig = hex::decode(sig_hex.trim()).map_err(|_| anyhow::anyhow!("{SIGNATURE} is not hex"))?;
    let pem = match (trust, cfg) {
        (Some(p), _) => std::fs::read_to_string(p).with_context(|| format!("cannot read --trust {}", p.display()))?,
        (None, Some(cfg)) => vakt_identity::Identity::load(&cfg.box_.state_dir.join("identity"))
            .context("no --trust key given, and this box's identity cannot be loaded")?
            .public_key_pem()?,
        (None, None) => anyhow::bail!("give --trust KEY.pub: the public key of the box that made the export"),
    };
    vakt_identity::verify_signature(&pem, &manifest, &sig)
        .map_err(|e| anyhow::anyhow!("the manifest's signature does not verify with the trusted key: {e}"))?;
    let m: Value = serde_json::from_slice(&manifest)?;
    let file = m["clip"]["file"].as_str().unwrap_or(CLIP);
    if file.contains('/') {
        anyhow::bail!("the manifest names a clip outside its directory: {file:?}");
    }
    let clip = std::fs::read(dir.join(file)).with_context(|| format!("cannot read the clip {file}"))?;
    let digest = hex::encode(Sha256::digest(&clip));
    if Some(digest.as_str()) != m["clip"]["sha256"].as_str() {
        anyhow::bail!(
            "{file} was changed after export: its SHA-256 is {digest}, the signed manifest says {}",
            m["clip"]["sha256"]
        );
    }
    Ok(m)
}
