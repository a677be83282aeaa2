//! `vakt redact`: writes a video redacted exactly as the box releases pictures: static masks,
//! then people and unexplained motion masked from the newest detector results the masker has,
//! the whole frame when those are too old. Frame for frame with the input, deterministic, on
//! media time. Fault injection (`--detector-delay`, `--detector-stop-at`) acts on the results the
//! masker receives. Design: `edge/docs/design/privacy.md`.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use time::OffsetDateTime;

use vakt_core::config::Config;
use vakt_core::redaction::{DetectorResult, FullReason, MaskPlan, MotionInput};
use vakt_media::{CaptureMsg, ClipWriter};
use vakt_vision::MotionResult;

use crate::analyze::{Progress, offline_analyzer, offline_capture, offline_source, write_tracks};
use crate::redaction::{Pairing, Redacted, RedactionStage};

pub struct RedactArgs {
    pub input: String,
    pub output: PathBuf,
    /// Subject access: this track stays visible.
    pub keep_track: Option<u64>,
    /// Detector results reach the masker this many seconds of media time after their frame.
    pub detector_delay: f64,
    /// No detector result from frames at or after this media time reaches the masker.
    pub detector_stop_at: Option<f64>,
    /// Write each frame's dynamic mask as DIR/000001.png (255 = masked).
    pub masks: Option<PathBuf>,
    /// Write the tracks, as `vakt analyze --tracks` does.
    pub tracks: Option<PathBuf>,
}

/// A stretch of frames masked whole, in media time.
#[derive(Debug, Clone, PartialEq)]
pub struct FullSpan {
    pub reason: FullReason,
    pub from_s: f64,
    pub to_s: f64,
    pub frames: u64,
}

pub struct RedactSummary {
    pub frames: u64,
    pub fully_masked: u64,
    pub spans: Vec<FullSpan>,
    pub detector_runs: u64,
    /// Share of all pixels masked dynamically, over the whole clip.
    pub masked_share: f64,
}

pub fn redact(cfg: &Config, args: &RedactArgs) -> anyhow::Result<RedactSummary> {
    let spec = offline_source(&args.input)?;
    if !cfg.detect.enabled {
        return Err(crate::UsageError(
            "vakt redact needs object detection to find people; the config sets `[detect] enabled = false`, \
             which would mask every frame whole"
                .into(),
        )
        .into());
    }
    if !args.detector_delay.is_finite() || args.detector_delay < 0.0 {
        return Err(crate::UsageError(format!(
            "--detector-delay {}: give milliseconds, 0 or more",
            args.detector_delay * 1000.0
        ))
        .into());
    }
    if let Some(dir) = &args.masks {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create --masks {}", dir.display()))?;
    }
    let mut tracks_out = match &args.tracks {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create --tracks {}", p.display()))?,
        )),
        None => None,
    };
    // written beside the output and renamed when complete: a failed run leaves no clip that
    // looks finished
    let partial = partial_path(&args.output);

    let mut analyzer = offline_analyzer(cfg, OffsetDateTime::UNIX_EPOCH, None)?;
    analyzer.prepare_for_redaction(cfg)?;
    let mut stage = RedactionStage::new(cfg, args.keep_track, Pairing::Strict);
    let mut capture = offline_capture(cfg, spec, true)?;
    let mut bar = Progress::new(capture.counters());

    let mut writer: Option<ClipWriter> = None;
    // results in the order they reach the masker: (media time they arrive, result)
    let mut in_flight: VecDeque<(f64, DetectorResult)> = VecDeque::new();
    let mut stats = Stats::default();
    let rx = capture.receiver().clone();
    let mut emit = |done: Vec<Redacted>, stats: &mut Stats| -> anyhow::Result<()> {
        for Redacted { plan, frame: r } in done {
            let w = match &mut writer {
                Some(w) => w,
                None => writer.insert(
                    ClipWriter::create(&partial, r.width(), r.height(), r.frame_rate().unwrap_or((25, 1)))
                        .map_err(anyhow::Error::msg)?,
                ),
            };
            w.push(&r).map_err(anyhow::Error::msg)?;
            if let Some(dir) = &args.masks {
                write_mask(dir, r.index(), r.mask(), r.width(), r.height())?;
            }
            stats.add(&plan, &r);
            bar.frame(stats.frames, r.media_time_s());
        }
        Ok(())
    };
    let outcome: anyhow::Result<()> = (|| {
        for msg in rx.iter() {
            let done = match msg {
                CaptureMsg::Frame(f) => {
                    let t = f.media_time_s();
                    let a = analyzer.process(&f)?;
                    if let (Some(w), Some((_, objects))) = (tracks_out.as_mut(), &a.objects) {
                        write_tracks(w, f.index(), objects)?;
                    }
                    if let Some(r) = a.detector_result
                        && args.detector_stop_at.is_none_or(|stop| r.t < stop)
                    {
                        in_flight.push_back((r.t + args.detector_delay, r));
                    }
                    // D6: the masker takes what has arrived by now and never waits for more
                    while in_flight.front().is_some_and(|(arrives, _)| *arrives <= t + 1e-9) {
                        let (_, r) = in_flight.pop_front().expect("checked above");
                        stage.add_result(&r);
                    }
                    stage.analysed(f.index(), t, motion_input(&a.motion))?
                }
                // both branches number frames from 1 in decode order: the stage pairs them up
                CaptureMsg::Full(f) => stage.full(f)?,
                CaptureMsg::EndOfStream => break,
                CaptureMsg::Failed(e) => anyhow::bail!("{e}"),
                CaptureMsg::SignalLost { reason, .. } => anyhow::bail!("the input failed: {reason}"),
                CaptureMsg::SignalRestored { .. } => Vec::new(),
            };
            emit(done, &mut stats)?;
        }
        emit(stage.finish()?, &mut stats)
    })();
    capture.stop();
    bar.finish();
    if let Err(e) = outcome {
        drop(writer);
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let Some(writer) = writer else {
        anyhow::bail!("--input {:?}: no frame could be decoded", args.input);
    };
    let written = match writer.finish() {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            anyhow::bail!("{e}");
        }
    };
    if let Some(w) = tracks_out.as_mut() {
        w.flush()?;
    }
    std::fs::rename(&partial, &args.output)
        .with_context(|| format!("cannot move {} to {}", partial.display(), args.output.display()))?;
    debug_assert_eq!(written, stats.frames);
    let detector_runs = analyzer.object_counters().map(|c| c.detector_runs).unwrap_or(0);
    Ok(stats.finish(detector_runs))
}

/// `.OUT.mp4.partial` beside `OUT.mp4`.
fn partial_path(output: &Path) -> PathBuf {
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "redacted.mp4".into());
    output.with_file_name(format!(".{name}.partial"))
}

/// The motion of a frame as the masker sees it: blob boxes in shares of the frame.
pub(crate) fn motion_input(m: &MotionResult) -> MotionInput {
    let (w, h) = (m.width.max(1) as f32, m.height.max(1) as f32);
    MotionInput {
        blobs: m.blobs.iter().map(|b| [b.x as f32 / w, b.y as f32 / h, b.w as f32 / w, b.h as f32 / h]).collect(),
        global_change: m.global_change,
    }
}

fn write_mask(dir: &Path, index: u64, mask: &[u8], width: u32, height: u32) -> anyhow::Result<()> {
    let img = image::GrayImage::from_raw(width, height, mask.to_vec()).context("mask size")?;
    let path = dir.join(format!("{index:06}.png"));
    img.save(&path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[derive(Default)]
struct Stats {
    frames: u64,
    fully_masked: u64,
    spans: Vec<FullSpan>,
    masked_px: u64,
    total_px: u64,
    /// Why the previous frame was masked whole, if it was.
    previous: Option<FullReason>,
}

impl Stats {
    fn add(&mut self, plan: &MaskPlan, r: &vakt_media::RedactedFrame) {
        self.frames += 1;
        self.masked_px += r.mask().iter().filter(|&&m| m != 0).count() as u64;
        self.total_px += r.mask().len() as u64;
        let t = r.media_time_s();
        let full = match plan {
            MaskPlan::Full(reason) => Some(*reason),
            MaskPlan::Regions { .. } => None,
        };
        if let Some(reason) = full {
            self.fully_masked += 1;
            match self.spans.last_mut() {
                // the previous frame was masked whole for the same reason: the span goes on
                Some(s) if self.previous == Some(reason) => {
                    s.to_s = t;
                    s.frames += 1;
                }
                _ => self.spans.push(FullSpan { reason, from_s: t, to_s: t, frames: 1 }),
            }
        }
        self.previous = full;
    }

    fn finish(self, detector_runs: u64) -> RedactSummary {
        RedactSummary {
            frames: self.frames,
            fully_masked: self.fully_masked,
            spans: self.spans,
            detector_runs,
            masked_share: if self.total_px > 0 { self.masked_px as f64 / self.total_px as f64 } else { 0.0 },
        }
    }
}
