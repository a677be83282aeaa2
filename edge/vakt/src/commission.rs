//! `vakt commission`: learns the scene reference once the installer has aimed the camera, and
//! stores it under the state directory (audited). Re-learning after a deliberate re-aim needs
//! `--force`. Design: `edge/docs/design/tamper.md` (K5).

use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use vakt_core::config::Config;
use vakt_core::event::rfc3339;
use vakt_media::{Capture, CaptureConfig, CaptureMsg, Pacing, Recovery};
use vakt_vision::GrayFrame;

use crate::scene::{ReferenceSource, TamperStage, load_reference, reference_path, save_reference};

pub fn commission(cfg: &Config, force: bool) -> anyhow::Result<()> {
    let state_dir = &cfg.box_.state_dir;
    std::fs::create_dir_all(state_dir).with_context(|| format!("cannot create {}", state_dir.display()))?;
    let _lock = crate::run::lock_state_dir(state_dir)
        .context("stop the box first (systemctl stop vakt): commissioning needs the camera and the state directory")?;
    let path = reference_path(state_dir);
    let previous = load_reference(&path)?;
    if let Some(p) = &previous
        && !force
    {
        anyhow::bail!(
            "a scene reference from {} exists ({}); re-learning it is only for a deliberate re-aim: run `vakt commission --force` (audited)",
            p.learned_at,
            path.display()
        );
    }
    let learn = cfg.tamper.reference_time;
    eprintln!("commissioning: learning the scene for {} — keep the camera still", humantime::format_duration(learn));
    let mut capture = Capture::start(CaptureConfig {
        source: cfg.source.spec.clone(),
        privacy: cfg.privacy.polygons(),
        analysis_width: cfg.motion.width,
        pacing: Pacing::Live,
        recovery: Recovery::Stop,
        loop_stored: cfg.source.loop_files,
        stall_timeout: cfg.source.stall_timeout,
        queue: 4,
    })
    .map_err(anyhow::Error::msg)?;
    let mut stage = TamperStage::new(&cfg.tamper, ReferenceSource::LearnFromStart);
    let deadline = std::time::Instant::now() + learn + Duration::from_secs(30);
    let rx = capture.receiver().clone();
    let mut frames = 0u64;
    let reference = loop {
        let msg = rx.recv_timeout(Duration::from_secs(1));
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the camera delivered {frames} frames in {} s; cannot commission", learn.as_secs() + 30);
        }
        match msg {
            Ok(CaptureMsg::Frame(f)) => {
                frames += 1;
                let g = GrayFrame { width: f.width(), height: f.height(), data: f.data() };
                stage.process(g, f.media_time_s())?;
                if let Some((r, true)) = stage.learned() {
                    break r.clone();
                }
            }
            Ok(CaptureMsg::Failed(e)) | Ok(CaptureMsg::SignalLost { reason: e, .. }) => {
                anyhow::bail!("the camera failed while commissioning: {e}")
            }
            Ok(CaptureMsg::EndOfStream) => anyhow::bail!("the source ended before the scene was learned"),
            Ok(CaptureMsg::SignalRestored { .. }) | Err(_) => {}
        }
    };
    capture.stop();
    anyhow::ensure!(
        reference.sharpness > 0.0 && reference.structure.iter().any(|&v| v > 1.0),
        "the picture has no structure (covered or blank?): aim the camera at the scene and commission again"
    );
    let learned_at = rfc3339(time::OffsetDateTime::now_utc());
    let samples = (learn.as_secs_f64() / cfg.tamper.check_interval.as_secs_f64()).round() as u32;
    let digest = save_reference(&path, &reference, &learned_at, samples)?;
    let mut log = crate::open_audit(cfg)?;
    log.append(
        "cli",
        "tamper.reference.learned",
        json!({
            "digest": digest,
            "frames": frames,
            "sharpness": reference.sharpness,
            "replaced": previous.as_ref().map(|p| p.digest.clone()),
        }),
    )?;
    println!(
        "commissioned: scene reference {} ({frames} frames, sharpness {:.3})",
        path.display(),
        reference.sharpness
    );
    println!("  digest {digest}");
    if previous.is_some() {
        println!("  the previous reference was replaced (audited)");
    }
    Ok(())
}
