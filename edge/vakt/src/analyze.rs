//! `vakt analyze`: deterministic offline replay of the box's pipeline over a file. Every decoded
//! frame is processed (no drops), time is media time, and two runs give identical bytes.
//! Design: `edge/docs/design/time.md` (T4).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use time::OffsetDateTime;

use vakt_core::clock::MediaClock;
use vakt_core::config::Config;
use vakt_core::counters::SeqAllocator;
use vakt_core::source::SourceSpec;
use vakt_media::{Capture, CaptureConfig, CaptureMsg, Pacing, Recovery};
use vakt_vision::MotionResult;

use vakt_core::event::round;

use crate::analysis::{Analyzer, EventFactory, Origin};
use crate::objects::{ObjectStage, TrackedObject, analysis_frames};
use crate::scene::{ReferenceSource, TamperStage};

pub struct AnalyzeArgs {
    pub input: String,
    pub events: PathBuf,
    pub motion_masks: Option<PathBuf>,
    /// One JSON line per decoded frame with the reported tracks.
    pub tracks: Option<PathBuf>,
    /// Wall-clock time the first frame stands for.
    pub start_time: OffsetDateTime,
    /// Commissioned scene; `None`: learn it from the start of the input.
    pub scene_reference: Option<vakt_vision::tamper::SceneReference>,
}

pub struct AnalyzeSummary {
    pub frames: u64,
    pub events: u64,
    /// Frames the object detector ran on (0 without detection).
    pub detector_runs: u64,
}

/// The `--input` of an offline command: a video file or an image sequence that exists.
pub(crate) fn offline_source(input: &str) -> anyhow::Result<SourceSpec> {
    let cwd = std::env::current_dir()?;
    let spec = SourceSpec::parse(input, &cwd).map_err(|e| anyhow::anyhow!("--input {input:?}: {e}"))?;
    match &spec {
        SourceSpec::File { path } if !path.is_file() => {
            anyhow::bail!("--input {input:?}: cannot read {}: no such file", path.display())
        }
        SourceSpec::File { .. } | SourceSpec::ImageSequence { .. } => Ok(spec),
        _ => anyhow::bail!("--input {input:?}: offline replay takes a video file or an image sequence"),
    }
}

/// The box's analysis for offline replay: events stamped from `start_time` on the media clock,
/// tamper with a known or learned reference, objects when detection is on.
pub(crate) fn offline_analyzer(
    cfg: &Config,
    start_time: OffsetDateTime,
    scene_reference: Option<&vakt_vision::tamper::SceneReference>,
) -> anyhow::Result<Analyzer> {
    let origin =
        Origin { box_id: cfg.box_.id.clone(), site: cfg.box_.site.clone(), camera: cfg.source.camera.clone(), boot: 0 };
    let factory = EventFactory::new(origin, SeqAllocator::ephemeral(), Box::new(MediaClock { anchor: start_time }));
    let tamper = cfg.tamper.enabled.then(|| {
        let source = match scene_reference {
            Some(r) => ReferenceSource::Known(r.clone()),
            None => ReferenceSource::LearnFromStart,
        };
        TamperStage::new(&cfg.tamper, cfg.privacy.polygons(), source)
    });
    let objects = if cfg.detect.enabled { Some(ObjectStage::load(cfg)?) } else { None };
    Ok(Analyzer::new(cfg, factory, tamper, objects)?)
}

/// Offline capture of `spec` with the box's static masks and analysis frames: every frame
/// delivered, the media clock from the file; with `full_frames`, the full-resolution branch too.
pub(crate) fn offline_capture(cfg: &Config, spec: SourceSpec, full_frames: bool) -> anyhow::Result<Capture> {
    let (analysis_width, colour) = analysis_frames(cfg);
    Capture::start(CaptureConfig {
        source: spec,
        privacy: cfg.privacy.polygons(),
        analysis_width,
        colour,
        full_frames,
        pacing: Pacing::Offline,
        recovery: Recovery::Stop,
        loop_stored: false,
        stall_timeout: cfg.source.stall_timeout,
        queue: 8,
        camera_element: cfg.hardware.profile.gstreamer.camera_source.clone(),
    })
    .map_err(anyhow::Error::msg)
}

/// Progress on a terminal: a bar over the clip's duration once GStreamer reports it, a spinner
/// until then (indicatif draws nothing when standard error is not a terminal).
pub(crate) struct Progress {
    bar: ProgressBar,
    counters: std::sync::Arc<vakt_media::CaptureCounters>,
    sized: bool,
}

impl Progress {
    pub(crate) fn new(counters: std::sync::Arc<vakt_media::CaptureCounters>) -> Progress {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"));
        Progress { bar, counters, sized: false }
    }

    /// After frame number `frames` at `media_time_s`; redraws every 25 frames.
    pub(crate) fn frame(&mut self, frames: u64, media_time_s: f64) {
        if !frames.is_multiple_of(25) {
            return;
        }
        let total_ms = self.counters.duration_ms.load(std::sync::atomic::Ordering::Relaxed);
        if total_ms > 0 && !self.sized {
            self.sized = true;
            self.bar.set_length(total_ms);
            self.bar.set_style(
                ProgressStyle::with_template("{bar:40} {percent:>3}% {elapsed} (eta {eta}) {msg}")
                    .expect("valid template"),
            );
        }
        self.bar.set_position((media_time_s * 1000.0) as u64);
        self.bar.set_message(format!("{frames} frames"));
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

pub fn analyze(cfg: &Config, args: &AnalyzeArgs) -> anyhow::Result<AnalyzeSummary> {
    let spec = offline_source(&args.input)?;
    if let Some(dir) = &args.motion_masks {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create --motion-masks {}", dir.display()))?;
    }
    if args.tracks.is_some() && !cfg.detect.enabled {
        anyhow::bail!("--tracks needs object detection; the config sets `[detect] enabled = false`");
    }
    let out = std::fs::File::create(&args.events)
        .with_context(|| format!("cannot create --events {}", args.events.display()))?;
    let mut out = std::io::BufWriter::new(out);
    let mut tracks_out = match &args.tracks {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create --tracks {}", p.display()))?,
        )),
        None => None,
    };

    let mut analyzer = offline_analyzer(cfg, args.start_time, args.scene_reference.as_ref())?;
    let mut capture = offline_capture(cfg, spec, false)?;

    let mut bar = Progress::new(capture.counters());
    let (mut frames, mut events) = (0u64, 0u64);
    let mut write_events =
        |evs: Vec<vakt_core::event::Event>, out: &mut std::io::BufWriter<std::fs::File>| -> anyhow::Result<()> {
            for e in evs {
                serde_json::to_writer(&mut *out, &e)?;
                out.write_all(b"\n")?;
                events += 1;
            }
            Ok(())
        };
    let rx = capture.receiver().clone();
    for msg in rx.iter() {
        match msg {
            CaptureMsg::Frame(f) => {
                frames += 1;
                let a = analyzer.process(&f)?;
                if let Some(dir) = &args.motion_masks {
                    write_mask(dir, f.index(), &a.motion, f.source_size())?;
                }
                if let (Some(w), Some((_, objects))) = (tracks_out.as_mut(), &a.objects) {
                    write_tracks(w, f.index(), objects)?;
                }
                write_events(a.events, &mut out)?;
                bar.frame(frames, f.media_time_s());
            }
            CaptureMsg::EndOfStream => break,
            CaptureMsg::Failed(e) => {
                bar.finish();
                anyhow::bail!("{e}");
            }
            CaptureMsg::SignalLost { reason, .. } => anyhow::bail!("the input failed: {reason}"),
            CaptureMsg::SignalRestored { .. } | CaptureMsg::Full(_) => {}
        }
    }
    capture.stop();
    write_events(analyzer.finish()?, &mut out)?;
    out.flush()?;
    if let Some(w) = tracks_out.as_mut() {
        w.flush()?;
    }
    bar.finish();
    if frames == 0 {
        anyhow::bail!("--input {:?}: no frame could be decoded", args.input);
    }
    let detector_runs = analyzer.object_counters().map(|c| c.detector_runs).unwrap_or(0);
    Ok(AnalyzeSummary { frames, events, detector_runs })
}

/// `{"frame": N, "objects": [{"track", "class", "score", "box": [left, top, width, height]}]}`,
/// N from 1, boxes in input pixels.
pub(crate) fn write_tracks(w: &mut impl Write, frame: u64, objects: &[TrackedObject]) -> anyhow::Result<()> {
    let objects: Vec<serde_json::Value> = objects
        .iter()
        .map(|o| {
            let b = o.bbox;
            serde_json::json!({
                "track": o.track,
                "class": o.class.as_str(),
                "score": round(o.score as f64, 3),
                "box": [round(b.x as f64, 1), round(b.y as f64, 1), round(b.w as f64, 1), round(b.h as f64, 1)],
                "coasting": o.coasting,
            })
        })
        .collect();
    serde_json::to_writer(&mut *w, &serde_json::json!({ "frame": frame, "objects": objects }))?;
    w.write_all(b"\n")?;
    Ok(())
}

/// Writes `DIR/NNNNNN.png` at the input resolution (nearest neighbour), 255 = moving.
fn write_mask(dir: &Path, index: u64, m: &MotionResult, source: (u32, u32)) -> anyhow::Result<()> {
    let (sw, sh) = if source.0 > 0 { source } else { (m.width, m.height) };
    let mut img = image::GrayImage::new(sw, sh);
    if !m.mask.is_empty() {
        for y in 0..sh {
            let my = ((y as u64 * m.height as u64) / sh as u64) as u32;
            for x in 0..sw {
                let mx = ((x as u64 * m.width as u64) / sw as u64) as u32;
                img.put_pixel(x, y, image::Luma([m.mask[(my * m.width + mx) as usize]]));
            }
        }
    }
    let path = dir.join(format!("{index:06}.png"));
    img.save(&path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
