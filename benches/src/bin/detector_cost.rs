//! Detector cost per frame on one core, through the box's own detector (tract-onnx): letterbox,
//! inference, decoding and NMS of YOLOX-nano 416 on real frames (packed BGR, as dumped by
//! `benches/run-detector.sh`). The OpenCV DNN side of the comparison is `benches/runtimes/opencv-dnn`.
//! With `--faces small|large`, the face detector masking runs beside it (UltraFace 320×240 or
//! 640×480) instead.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use serde_json::json;

use vakt_benches::stats::Summary;
use vakt_core::models;
use vakt_vision::{BgrFrame, Detector, FaceInput, FaceParams, UltraFace, YoloxParams, YoloxTract};

#[derive(Parser)]
struct Args {
    /// Raw BGR frames, back to back.
    #[arg(long)]
    frames: PathBuf,
    #[arg(long)]
    width: u32,
    #[arg(long)]
    height: u32,
    /// Model directory (models/fetch.sh DEST).
    #[arg(long)]
    models: PathBuf,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Time the face detector instead: `small` (320×240) or `large` (640×480).
    #[arg(long)]
    faces: Option<String>,
}

/// One detector behind one call, for timing.
type DetectFn = Box<dyn FnMut(&BgrFrame<'_>) -> anyhow::Result<Vec<vakt_core::detect::Detection>>>;

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let raw = std::fs::read(&a.frames).with_context(|| format!("cannot read {}", a.frames.display()))?;
    let size = (a.width * a.height * 3) as usize;
    anyhow::ensure!(raw.len() >= size, "{} holds less than one {}x{} BGR frame", a.frames.display(), a.width, a.height);
    let manifest = |name: &str| models::builtin().into_iter().find(|m| m.name == name).context("no such manifest");
    let (label, mut det): (String, DetectFn) = match a.faces.as_deref() {
        None => {
            let mut d = YoloxTract::load(&a.models, &manifest("yolox_nano")?, YoloxParams::default())?;
            ("yolox_nano 416".into(), Box::new(move |f| Ok(d.detect(f)?)))
        }
        Some(size) => {
            let input = match size {
                "small" => FaceInput::Small,
                "large" => FaceInput::Large,
                other => anyhow::bail!("--faces {other:?}: \"small\" or \"large\""),
            };
            let mut d =
                UltraFace::load(&a.models, &manifest("ultraface")?, FaceParams { input, ..FaceParams::default() })?;
            let (w, h) = input.size();
            (format!("ultraface {w}x{h}"), Box::new(move |f| Ok(d.detect(f)?)))
        }
    };
    let frames: Vec<&[u8]> = raw.chunks_exact(size).collect();
    for f in frames.iter().take(a.warmup) {
        det(&BgrFrame { width: a.width, height: a.height, data: f })?;
    }
    let mut ms = Vec::new();
    let mut people = 0usize;
    for f in &frames {
        let t0 = Instant::now();
        let d = det(&BgrFrame { width: a.width, height: a.height, data: f })?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        people += d.iter().filter(|x| x.score >= 0.5 && x.class == vakt_core::detect::ObjectClass::Person).count();
    }
    let s = Summary::of(&ms).context("no frames")?;
    println!(
        "{}",
        json!({"runtime": "tract-onnx 0.23 (the box)", "model": label, "threads": 1, "frames": s.n,
               "ms_median": s.median, "ms_p90": s.p90, "ms_mean": s.mean,
               "people_per_frame": people as f64 / frames.len() as f64})
    );
    Ok(())
}
