//! Cost of the redaction stage per frame at 720p and 1080p on one core: planning (held boxes,
//! motion), painting the plan and masking the pixels in each mode, on real static-masked frames
//! from a GStreamer test pattern (the capture's full-resolution branch: `StaticMaskedFrame` can
//! only come from the pipeline). The plan has 12 people and 6 moving regions, about what a busy
//! PETS09 frame has. Prints one JSON object; run pinned to one core:
//!
//!   taskset -c 0 target/release/mask_cost

use std::time::Instant;

use vakt_benches::stats::Summary;
use vakt_core::detect::ObjectClass;
use vakt_core::redaction::{DetectorResult, MaskMode, MaskParams, MaskPlanner, MotionInput, Sighting};
use vakt_core::source::SourceSpec;
use vakt_media::{Capture, CaptureConfig, CaptureMsg, Pacing, Recovery, Redactor, StaticMaskedFrame};

fn frames(width: u32, height: u32, n: usize) -> anyhow::Result<Vec<StaticMaskedFrame>> {
    let source = SourceSpec::TestPattern { pattern: "ball".into(), width, height, fps: 25 };
    let mut capture = Capture::start(CaptureConfig {
        source,
        privacy: vec![],
        analysis_width: 320,
        colour: false,
        full_frames: true,
        pacing: Pacing::Offline,
        recovery: Recovery::Stop,
        loop_stored: false,
        stall_timeout: std::time::Duration::from_secs(10),
        queue: 4,
        camera_element: "v4l2src".into(),
    })
    .map_err(anyhow::Error::msg)?;
    let mut out = Vec::new();
    while out.len() < n {
        match capture.receiver().recv_timeout(std::time::Duration::from_secs(20))? {
            CaptureMsg::Full(f) => out.push(f),
            CaptureMsg::Failed(e) => anyhow::bail!("{e}"),
            _ => {}
        }
    }
    capture.stop();
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let mut planner = MaskPlanner::new(MaskParams::default());
    let sightings = (0..12)
        .map(|i| {
            Sighting::object(
                Some(i),
                ObjectClass::Person,
                [0.05 + 0.075 * i as f32, 0.3 + 0.02 * (i % 4) as f32, 0.04, 0.15],
                (0.05, 0.0),
            )
        })
        .collect();
    planner.add_result(&DetectorResult { t: 0.0, sightings });
    let motion =
        MotionInput { blobs: (0..6).map(|i| [0.1 + 0.14 * i as f32, 0.6, 0.05, 0.1]).collect(), global_change: false };
    let mut report = serde_json::Map::new();
    for (name, w, h) in [("720p", 1280u32, 720u32), ("1080p", 1920, 1080)] {
        let input = frames(w, h, 60)?;
        for mode in MaskMode::ALL {
            let mut redactor = Redactor::new(mode, vec![]);
            let mut ms = Vec::new();
            let mut masked = 0.0;
            for f in input.iter().cloned() {
                let t0 = Instant::now();
                let plan = planner.plan(0.1, &motion);
                let r = redactor.redact(f, &plan);
                ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                masked = r.mask().iter().filter(|&&m| m != 0).count() as f64 / r.mask().len() as f64;
            }
            let s = Summary::of(&ms).expect("samples");
            report.insert(
                format!("{name}_{}", mode.as_str()),
                serde_json::json!({"median_ms": s.median, "p90_ms": s.p90, "frames": s.n, "masked_share": masked}),
            );
        }
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
