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
    // A damaged reference can always be replaced with --force; without it, nothing is replaced.
    let previous = match load_reference(&path) {
        Ok(p) => p.map(|p| p.digest),
        Err(e) if force => {
            tracing::warn!(error = %format!("{e:#}"), "replacing a damaged scene reference");
            Some("damaged".to_string())
        }
        Err(e) => return Err(e),
    };
    if previous.is_some() && !force {
        anyhow::bail!(
            "a scene reference exists ({}); re-learning it is only for a deliberate re-aim: run `vakt commission --force` (audited)",
            path.display()
        );
    }
    let learn = cfg.tamper.reference_time;
    eprintln!("commissioning: learning the scene for {} — keep the camera still", humantime::format_duration(learn));
    let mut capture = Capture::start(CaptureConfig {
        source: cfg.source.spec.clone(),
        privacy: cfg.privacy.polygons(),
        // the same frames as the running box, so the reference fits what it will compare against
        analysis_width: crate::objects::analysis_frames(cfg).0,
        colour: false,
        full_frames: false,
        pacing: Pacing::Live,
        recovery: Recovery::Stop,
        loop_stored: cfg.source.loop_files,
        stall_timeout: cfg.source.stall_timeout,
        queue: 4,
        camera_element: cfg.hardware.profile.gstreamer.camera_source.clone(),
    })
    .map_err(anyhow::Error::msg)?;
    let mut stage = TamperStage::new(&cfg.tamper, cfg.privacy.polygons(), ReferenceSource::LearnFromStart);
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
                let full = GrayFrame { width: f.width(), height: f.height(), data: f.data() };
                let (data, width, height) = vakt_vision::resize_gray(full, cfg.motion.width)?;
                stage.process(GrayFrame { width, height, data: &data }, f.media_time_s())?;
                if let Some((r, from)) = stage.learned() {
                    break (r.clone(), from.samples(), from.max_dark, from.max_bright);
                }
            }
            Ok(CaptureMsg::Failed(e)) | Ok(CaptureMsg::SignalLost { reason: e, .. }) => {
                anyhow::bail!("the camera failed while commissioning: {e}")
            }
            Ok(CaptureMsg::EndOfStream) => anyhow::bail!("the source ended before the scene was learned"),
            Ok(CaptureMsg::SignalRestored { .. }) | Ok(CaptureMsg::Full(_)) | Err(_) => {}
        }
    };
    capture.stop();
    let (reference, samples, max_dark, max_bright) = reference;
    let th = &cfg.tamper.thresholds;
    anyhow::ensure!(
        max_dark < th.dark_fraction * 0.8 && max_bright < th.bright_fraction * 0.8,
        "the picture was {:.0} % dark and {:.0} % saturated while learning (covered, at night, or blinded?): commission in daylight with a clear view",
        max_dark * 100.0,
        max_bright * 100.0
    );
    anyhow::ensure!(
        reference.sharpness > 0.0
            && reference.structure.iter().filter(|&&v| v > 1.0).count() * 20 > reference.structure.len(),
        "the picture has almost no structure outside the privacy masks (covered or blank?): aim the camera at the scene and commission again"
    );
    let learned_at = rfc3339(time::OffsetDateTime::now_utc());
    let digest = save_reference(&path, &reference, &learned_at, samples, cfg)?;
    let mut log = crate::open_audit(cfg)?;
    log.append(
        "cli",
        "tamper.reference.learned",
        json!({
            "digest": digest,
            "frames": frames,
            "sharpness": reference.sharpness,
            "replaced": previous,
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
