//! Motion cost per frame on one core, starting from what a decoder hands the box: an I420 frame.
//! Ours: the Y plane scaled to the working width (INTER_AREA), `BackgroundMotion::detect`.
//! MOG2 at its defaults, twice: on colour (I420 → BGR, scaled, `apply`), as in the quality
//! comparison, and on the same grey input as ours (Y plane, scaled, `apply`). Same CDnet frames
//! scaled up to several input sizes; the three rotate frame by frame in one process, so their
//! ratios survive a noisy machine. Run by `benches/run-motion.sh`; results in `benches/RESULTS.md`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use opencv::core::{self, Mat, Size};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc, video};
use serde_json::json;

use vakt_benches::cdnet::{self, FIRST_SCORED};
use vakt_benches::stats::Summary;
use vakt_core::config;
use vakt_vision::{BackgroundMotion, GrayFrame, MotionDetector, MotionParams};

/// Media time step between frames (the rate `vakt analyze` gives an image sequence).
const FRAME_STEP_S: f64 = 1.0 / 25.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dims {
    w: u32,
    h: u32,
}

impl FromStr for Dims {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a size like 640x360");
        let (w, h) = s.split_once('x').ok_or_else(bad)?;
        let (w, h) = (w.parse::<u32>().map_err(|_| bad())?, h.parse::<u32>().map_err(|_| bad())?);
        if w == 0 || h == 0 || w > 7680 || h > 4320 {
            return Err(format!("{s:?}: width and height must be 1..=7680 and 1..=4320"));
        }
        Ok(Dims { w, h })
    }
}

impl std::fmt::Display for Dims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.w, self.h)
    }
}

#[derive(Parser)]
#[command(about = "Per-frame cost of our motion detector next to OpenCV MOG2, one core, interleaved")]
struct Cli {
    /// CDnet sequence directory (input/in%06d.jpg).
    #[arg(long)]
    cdnet: PathBuf,
    /// The box's configuration: `[motion]` parameters and working width.
    #[arg(long, default_value = "deploy/config/example.toml")]
    config: PathBuf,
    /// Input sizes; the CDnet frames are scaled up to each (untimed).
    #[arg(long, value_delimiter = ',', default_value = "320x240,640x360,1920x1080")]
    sizes: Vec<Dims>,
    /// Timed frames per size.
    #[arg(long, default_value_t = 300)]
    frames: usize,
    /// Untimed frames per size before timing starts (the models learn the scene meanwhile).
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// First CDnet frame used.
    #[arg(long, default_value_t = FIRST_SCORED)]
    first: u32,
    /// Also write every number as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Milliseconds per frame for one input size.
struct Timings {
    input: Dims,
    work: Dims,
    ours: Vec<f64>,
    ours_detect: Vec<f64>,
    mog2_colour: Vec<f64>,
    mog2_grey: Vec<f64>,
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn run_size(
    frames: &[Mat],
    input: Dims,
    work_width: u32,
    params: &MotionParams,
    warmup: usize,
) -> anyhow::Result<Timings> {
    let work =
        Dims { w: work_width, h: ((input.h as u64 * work_width as u64 + input.w as u64 / 2) / input.w as u64) as u32 };
    let work_size = Size::new(work.w as i32, work.h as i32);
    let scale = work != input;
    let y_rows = core::Range::new(0, input.h as i32)?;
    let mut ours = BackgroundMotion::new(params.clone())?;
    let mut mog2_c = video::create_background_subtractor_mog2(500, 16.0, true)?;
    let mut mog2_g = video::create_background_subtractor_mog2(500, 16.0, true)?;
    let (mut small, mut bgr, mut fg) = (Mat::default(), Mat::default(), Mat::default());
    let mut t = Timings { input, work, ours: vec![], ours_detect: vec![], mog2_colour: vec![], mog2_grey: vec![] };

    for (i, i420) in frames.iter().enumerate() {
        let media_t = i as f64 * FRAME_STEP_S;
        let mut times = [0.0f64; 4];
        // Rotate the order, so no contender always runs on a cache another one warmed.
        for k in 0..3 {
            match (i + k) % 3 {
                0 => {
                    let start = Instant::now();
                    let y = i420.row_range(&y_rows)?;
                    let data = if scale {
                        imgproc::resize(&y, &mut small, work_size, 0.0, 0.0, imgproc::INTER_AREA)?;
                        small.data_bytes()?
                    } else {
                        y.data_bytes()?
                    };
                    let detect_start = Instant::now();
                    ours.detect(GrayFrame { width: work.w, height: work.h, data }, media_t)?;
                    times[0] = ms_since(start);
                    times[1] = ms_since(detect_start);
                }
                1 => {
                    let start = Instant::now();
                    imgproc::cvt_color(i420, &mut bgr, imgproc::COLOR_YUV2BGR_I420, 0)?;
                    if scale {
                        imgproc::resize(&bgr, &mut small, work_size, 0.0, 0.0, imgproc::INTER_AREA)?;
                        video::BackgroundSubtractorMOG2Trait::apply(&mut mog2_c, &small, &mut fg, -1.0)?;
                    } else {
                        video::BackgroundSubtractorMOG2Trait::apply(&mut mog2_c, &bgr, &mut fg, -1.0)?;
                    }
                    times[2] = ms_since(start);
                }
                _ => {
                    let start = Instant::now();
                    let y = i420.row_range(&y_rows)?;
                    if scale {
                        imgproc::resize(&y, &mut small, work_size, 0.0, 0.0, imgproc::INTER_AREA)?;
                        video::BackgroundSubtractorMOG2Trait::apply(&mut mog2_g, &small, &mut fg, -1.0)?;
                    } else {
                        video::BackgroundSubtractorMOG2Trait::apply(&mut mog2_g, &y, &mut fg, -1.0)?;
                    }
                    times[3] = ms_since(start);
                }
            }
        }
        if i >= warmup {
            t.ours.push(times[0]);
            t.ours_detect.push(times[1]);
            t.mog2_colour.push(times[2]);
            t.mog2_grey.push(times[3]);
        }
    }
    Ok(t)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = config::load(&cli.config)?;
    let params = MotionParams::from_config(&cfg.motion);
    core::set_num_threads(1)?;
    let available = cdnet::frame_count(&cli.cdnet)?;
    let needed = (cli.warmup + cli.frames) as u32;
    anyhow::ensure!(cli.frames > 0, "--frames must be at least 1");
    anyhow::ensure!(
        cli.first >= 1 && cli.first + needed - 1 <= available,
        "--first {} with {} frames runs past the sequence's {available} frames",
        cli.first,
        needed
    );
    let originals = (cli.first..cli.first + needed)
        .map(|k| cdnet::read_image(&cdnet::input_path(&cli.cdnet, k), imgcodecs::IMREAD_COLOR))
        .collect::<anyhow::Result<Vec<Mat>>>()?;

    let mut results = Vec::new();
    for &size in &cli.sizes {
        // Scaling up to the input size and converting to I420 (what a decoder delivers) is setup,
        // not timed.
        anyhow::ensure!(size.w % 2 == 0 && size.h % 2 == 0, "{size}: I420 needs even sizes");
        let frames = originals
            .iter()
            .map(|m| {
                let (mut up, mut i420) = (Mat::default(), Mat::default());
                imgproc::resize(m, &mut up, Size::new(size.w as i32, size.h as i32), 0.0, 0.0, imgproc::INTER_LINEAR)?;
                imgproc::cvt_color(&up, &mut i420, imgproc::COLOR_BGR2YUV_I420, 0)?;
                Ok(i420)
            })
            .collect::<anyhow::Result<Vec<Mat>>>()
            .with_context(|| format!("cannot scale the frames to {size}"))?;
        results.push(run_size(&frames, size, cfg.motion.width, &params, cli.warmup)?);
    }

    println!("## Motion cost per frame");
    println!();
    println!(
        "OpenCV {} with {} thread(s); CDnet highway frames {}–{} scaled to each input size and converted to I420 \
         (the decoder's output; untimed), {} untimed warm-up + {} timed frames per size, the three contenders \
         rotating frame by frame. Ours: Y plane, INTER_AREA to the working width {}, detect. MOG2 (500, 16, \
         shadows) on colour: I420→BGR, INTER_AREA, apply. MOG2 on grey: the same input as ours.",
        core::get_version_string()?,
        core::get_num_threads()?,
        cli.first,
        cli.first + needed - 1,
        cli.warmup,
        cli.frames,
        cfg.motion.width,
    );
    println!();
    println!(
        "| input | working | ours median / p90 ms | of which detect | MOG2 colour median / p90 ms | \
         MOG2 grey median / p90 ms | ours / MOG2 colour | ours / MOG2 grey |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for t in &results {
        let s = |v: &Vec<f64>| Summary::of(v).expect("timed frames");
        let (o, od, mc, mg) = (s(&t.ours), s(&t.ours_detect), s(&t.mog2_colour), s(&t.mog2_grey));
        println!(
            "| {} | {} | {:.2} / {:.2} | {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | **{:.2}** | **{:.2}** |",
            t.input,
            t.work,
            o.median,
            o.p90,
            od.median,
            mc.median,
            mc.p90,
            mg.median,
            mg.p90,
            o.median / mc.median,
            o.median / mg.median,
        );
        rows.push(json!({
            "input": t.input.to_string(), "working": t.work.to_string(), "frames": o.n,
            "ours_ms": { "median": o.median, "p90": o.p90, "mean": o.mean },
            "ours_detect_ms": { "median": od.median, "p90": od.p90, "mean": od.mean },
            "mog2_colour_ms": { "median": mc.median, "p90": mc.p90, "mean": mc.mean },
            "mog2_grey_ms": { "median": mg.median, "p90": mg.p90, "mean": mg.mean },
            "ratio_colour_median": o.median / mc.median,
            "ratio_grey_median": o.median / mg.median,
        }));
    }
    if let Some(path) = &cli.json {
        let doc = json!({
            "opencv": core::get_version_string()?,
            "threads": core::get_num_threads()?,
            "first_frame": cli.first, "warmup": cli.warmup, "frames": cli.frames,
            "config": cli.config.display().to_string(),
            "sizes": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("cannot write --json {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_bad_ones_are_named() {
        assert_eq!("640x360".parse::<Dims>().unwrap(), Dims { w: 640, h: 360 });
        assert!("640".parse::<Dims>().unwrap_err().contains("\"640\""));
        assert!("0x10".parse::<Dims>().is_err());
    }
}
