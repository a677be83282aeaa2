//! Motion quality on CDnet-2014 `highway`: pixel-level precision, recall and F1 of our detector
//! (the masks `vakt analyze --motion-masks` wrote, and the library run here on the same JPEGs)
//! next to OpenCV's MOG2 at its defaults, over the same frames in one process. Every error is
//! also sorted by what the pixel is (shadow, a vehicle's outline, an empty lane, the roadside, a
//! vehicle's interior) and where it is. Run by `benches/run-motion.sh`; results in
//! `benches/RESULTS.md`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use opencv::core::{self, Mat, Size, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, imgproc, video};
use serde_json::{Value, json};

use vakt_benches::cdnet::{self, FIRST_SCORED, GroundTruth, PixelClass, RANGES, Range, Scorer, Tally};
use vakt_core::config;
use vakt_core::geometry::Raster;
use vakt_vision::{BackgroundMotion, GrayFrame, MotionDetector, MotionParams};

/// `vakt analyze` plays an image sequence at this rate (`imagesequencesrc` in
/// `edge/media/src/capture.rs`), so frame k is at media time (k - 1) / 25 s.
const SEQUENCE_FPS: f64 = 25.0;

/// The static mask stage paints masked areas with this luma (I420, `edge/media/src/mask`).
const MASK_LUMA: u8 = 16;

/// Frames per row of the timeline table.
const BLOCK: u32 = 100;

/// Side of a cell of the where-in-the-image table, pixels.
const GRID_PX: usize = 40;

#[derive(Parser)]
#[command(about = "Pixel-level motion quality on CDnet-2014: our detector next to OpenCV MOG2")]
struct Cli {
    /// CDnet sequence directory (input/in%06d.jpg, groundtruth/gt%06d.png).
    #[arg(long)]
    cdnet: PathBuf,
    /// Masks written by `vakt analyze --input 'CDNET/input/in%06d.jpg' --motion-masks DIR`.
    #[arg(long)]
    ours_masks: PathBuf,
    /// The box's configuration: `[motion]` parameters and privacy masks.
    #[arg(long, default_value = "deploy/config/example.toml")]
    config: PathBuf,
    /// Process frames 1..=N only; ranges that end after N are left out (a quick check).
    #[arg(long)]
    last: Option<u32>,
    /// Also write every number as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write figures into this directory: per-pixel false-positive and false-negative counts as
    /// PNG heat maps (`METHOD-fp.png`, `METHOD-fn.png`), and the `--snapshot` frames.
    #[arg(long)]
    figures: Option<PathBuf>,
    /// Scored frames to draw as `frame-K.png` in `--figures`: input, ground truth, then ours
    /// (pipeline) and MOG2 with true positives green, false positives red, false negatives blue.
    #[arg(long, value_delimiter = ',', requires = "figures")]
    snapshot: Vec<u32>,
}

struct Method {
    key: &'static str,
    name: &'static str,
    scorer: Scorer,
    /// Scored frames on which the detector reported a global change (and so no motion).
    global_changes: Option<u64>,
}

/// Our detector in this process, fed the way the box feeds it: grey frame, optional static
/// privacy masks at the source resolution, scaled to the working width.
struct Library {
    detector: BackgroundMotion,
    work_width: u32,
    privacy: Option<Raster>,
    global_changes: u64,
}

impl Library {
    fn new(params: MotionParams, work_width: u32, privacy: Option<Raster>) -> anyhow::Result<Library> {
        Ok(Library { detector: BackgroundMotion::new(params)?, work_width, privacy, global_changes: 0 })
    }

    /// The frame's motion mask at the source resolution.
    fn detect(&mut self, grey: &Mat, t: f64) -> anyhow::Result<(Vec<u8>, bool)> {
        let (w, h) = (grey.cols() as u32, grey.rows() as u32);
        let mut src = cdnet::gray_bytes(grey)?.to_vec();
        if let Some(r) = &self.privacy {
            r.fill(&mut src, w as usize, 1, &[MASK_LUMA]);
        }
        let (ww, wh) = (self.work_width, ((h as u64 * self.work_width as u64 + w as u64 / 2) / w as u64) as u32);
        let work = if (ww, wh) == (w, h) {
            src
        } else {
            let m = Mat::from_slice(&src)?.reshape(1, h as i32)?.try_clone()?;
            let mut small = Mat::default();
            imgproc::resize(&m, &mut small, Size::new(ww as i32, wh as i32), 0.0, 0.0, imgproc::INTER_AREA)?;
            cdnet::gray_bytes(&small)?.to_vec()
        };
        let r = self.detector.detect(GrayFrame { width: ww, height: wh, data: &work }, t)?;
        Ok((upscale_nearest(&r.mask, (ww, wh), (w, h)), r.global_change))
    }
}

/// Nearest-neighbour scaling, as `vakt analyze` writes its masks.
fn upscale_nearest(mask: &[u8], (mw, mh): (u32, u32), (w, h): (u32, u32)) -> Vec<u8> {
    if (mw, mh) == (w, h) {
        return mask.to_vec();
    }
    let mut out = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        let my = (y as u64 * mh as u64 / h as u64) as u32;
        out.extend((0..w).map(|x| mask[(my * mw + (x as u64 * mw as u64 / w as u64) as u32) as usize]));
    }
    out
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = config::load(&cli.config)?;
    let frames = cdnet::frame_count(&cli.cdnet)?;
    let last = cli.last.unwrap_or(frames).min(frames);
    let ranges: Vec<Range> = RANGES.iter().copied().filter(|r| r.last <= last).collect();
    if ranges.is_empty() {
        bail!("--last {last}: no scored range ends by then (they end at 1000 and 1700)");
    }
    let scored = Range { name: "scored", first: FIRST_SCORED, last: ranges.iter().map(|r| r.last).max().unwrap() };
    let gt = GroundTruth::load(&cli.cdnet, scored.first, scored.last)?;
    let (w, h) = (gt.width, gt.height);
    let privacy_polygons = cfg.privacy.polygons();
    let privacy = Raster::conservative(&privacy_polygons, w, h);
    let in_privacy: Vec<bool> = privacy.to_mask().iter().map(|&v| v != 0).collect();
    let params = MotionParams::from_config(&cfg.motion);

    let mut pipeline = Method {
        key: "ours-pipeline",
        name: "ours: `vakt analyze` masks",
        scorer: Scorer::new(&gt),
        global_changes: None,
    };
    let mut plain = Method {
        key: "ours-library",
        name: "ours: library, grey JPEG",
        scorer: Scorer::new(&gt),
        global_changes: None,
    };
    let mut masked = Method {
        key: "ours-library-privacy",
        name: "ours: library, grey JPEG + config privacy masks",
        scorer: Scorer::new(&gt),
        global_changes: None,
    };
    let mut mog2_m =
        Method { key: "mog2", name: "MOG2 defaults (colour)", scorer: Scorer::new(&gt), global_changes: None };
    let mut lib_plain = Library::new(params.clone(), cfg.motion.width, None)?;
    let mut lib_masked = Library::new(params.clone(), cfg.motion.width, Some(privacy.clone()))?;
    let mut mog2 = video::create_background_subtractor_mog2(500, 16.0, true)?;
    let mut mog2_fg = Mat::default();
    if let Some(dir) = &cli.figures {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create --figures {}", dir.display()))?;
    }
    if let Some(k) = cli.snapshot.iter().find(|&&k| !scored.contains(k)) {
        bail!("--snapshot {k}: not a scored frame ({}–{})", scored.first, scored.last);
    }
    // Pixels (over scored frames) where the pipeline's mask and the library's disagree.
    let (mut differ_plain, mut differ_masked) = (0u64, 0u64);

    for k in 1..=scored.last {
        let input = cdnet::input_path(&cli.cdnet, k);
        let grey = cdnet::read_image(&input, imgcodecs::IMREAD_GRAYSCALE)?;
        let colour = cdnet::read_image(&input, imgcodecs::IMREAD_COLOR)?;
        if (grey.cols() as u32, grey.rows() as u32) != (w, h) {
            bail!("{}: {}x{}, the ground truth is {w}x{h}", input.display(), grey.cols(), grey.rows());
        }
        let t = (k - 1) as f64 / SEQUENCE_FPS;
        let (mask_plain, gc_plain) = lib_plain.detect(&grey, t)?;
        let (mask_masked, gc_masked) = lib_masked.detect(&grey, t)?;
        video::BackgroundSubtractorMOG2Trait::apply(&mut mog2, &colour, &mut mog2_fg, -1.0)?;
        if k < scored.first {
            continue;
        }
        lib_plain.global_changes += gc_plain as u64;
        lib_masked.global_changes += gc_masked as u64;
        let ours_path = cli.ours_masks.join(format!("{k:06}.png"));
        let ours = cdnet::read_image(&ours_path, imgcodecs::IMREAD_GRAYSCALE)
            .with_context(|| format!("frame {k}: did `vakt analyze --motion-masks` run over all frames?"))?;
        if (ours.cols() as u32, ours.rows() as u32) != (w, h) {
            bail!("{}: {}x{}, the ground truth is {w}x{h}", ours_path.display(), ours.cols(), ours.rows());
        }
        let ours = cdnet::gray_bytes(&ours)?;
        pipeline.scorer.add(&gt, k, ours, &in_privacy)?;
        plain.scorer.add(&gt, k, &mask_plain, &in_privacy)?;
        masked.scorer.add(&gt, k, &mask_masked, &in_privacy)?;
        mog2_m.scorer.add(&gt, k, cdnet::gray_bytes(&mog2_fg)?, &in_privacy)?;
        if let (Some(dir), true) = (&cli.figures, cli.snapshot.contains(&k)) {
            let labels = cdnet::read_image(&cdnet::groundtruth_path(&cli.cdnet, k), imgcodecs::IMREAD_COLOR)?;
            let panels = [
                colour.try_clone()?,
                labels,
                error_overlay(&colour, gt.classes(k), ours)?,
                error_overlay(&colour, gt.classes(k), cdnet::gray_bytes(&mog2_fg)?)?,
            ];
            let mut strip = Mat::default();
            core::hconcat(&Vector::<Mat>::from_iter(panels), &mut strip)?;
            write_png(&dir.join(format!("frame-{k}.png")), &strip)?;
        }
        differ_plain += ours.iter().zip(&mask_plain).filter(|(a, b)| (**a > 127) != (**b > 127)).count() as u64;
        differ_masked += ours.iter().zip(&mask_masked).filter(|(a, b)| (**a > 127) != (**b > 127)).count() as u64;
    }
    plain.global_changes = Some(lib_plain.global_changes);
    masked.global_changes = Some(lib_masked.global_changes);
    let methods = [pipeline, plain, masked, mog2_m];
    let scored_pixels = (scored.last + 1 - scored.first) as u64 * (w * h) as u64;

    println!("## Motion quality, CDnet-2014 highway");
    println!();
    println!(
        "Config {}: working width {}, threshold {}, sigma_k {}, learn_time {} s, min_area {}, global_change {}, \
         {} motion mask(s), {} privacy mask(s) ({} of {} pixels at {w}x{h}). Frames 1–{} processed, {}–{} scored.",
        cli.config.display(),
        cfg.motion.width,
        params.threshold,
        params.sigma_k,
        params.learn_time_s,
        params.min_area,
        params.global_change,
        params.ignore.len(),
        privacy_polygons.len(),
        privacy.count(),
        w * h,
        scored.last,
        scored.first,
        scored.last,
    );
    println!();
    print_scores(&methods, &ranges);
    println!();
    println!(
        "Pipeline vs library (same detector, same parameters): masks differ on {:.3} % of pixels with the privacy \
         masks applied as the box does, {:.3} % without.",
        100.0 * differ_masked as f64 / scored_pixels as f64,
        100.0 * differ_plain as f64 / scored_pixels as f64,
    );
    let widest = *ranges.last().expect("at least one range");
    println!();
    println!(
        "Cross-check, {}: with CDnet's shadow pixels (label 50) left unscored instead of counted as background, \
         scores are:",
        widest.label()
    );
    for m in &methods {
        let t = m.scorer.sum(widest.first, widest.last);
        let c = t.counts();
        let c = cdnet::Counts { fp: c.fp - t.fp(PixelClass::Shadow), ..c };
        println!("- {}: P {:.3}, R {:.3}, F {:.3}", m.name, c.precision(), c.recall(), c.f1());
    }
    println!();
    for m in &methods {
        if let Some(n) = m.global_changes {
            println!("{}: {n} scored frame(s) reported a global change (no motion).", m.name);
        }
    }
    println!();
    print_breakdown(&methods, &ranges);
    println!();
    print_timeline(&methods[0], &methods[3], scored);
    println!();
    print_rows(&methods[0], &methods[3]);
    println!();
    print_grid(&methods[0]);
    println!();
    print_worst(&methods[0], scored);

    if let Some(dir) = &cli.figures {
        for m in &methods {
            write_heatmap(&dir.join(format!("{}-fp.png", m.key)), &m.scorer.fp_map, w, h)?;
            write_heatmap(&dir.join(format!("{}-fn.png", m.key)), &m.scorer.fn_map, w, h)?;
        }
    }
    if let Some(path) = &cli.json {
        let doc = json!({
            "dataset": cli.cdnet.display().to_string(),
            "config": cli.config.display().to_string(),
            "params": {
                "width": cfg.motion.width, "threshold": params.threshold, "sigma_k": params.sigma_k,
                "learn_time_s": params.learn_time_s, "min_area": params.min_area,
                "global_change": params.global_change, "motion_masks": params.ignore.len(),
                "privacy_masks": privacy_polygons.len(), "privacy_pixels": privacy.count(),
            },
            "frames_processed": scored.last,
            "halo_px": cdnet::HALO_PX,
            "edge_px": cdnet::EDGE_PX,
            "pipeline_vs_library_differing_pixels": {
                "with_privacy_masks": differ_masked, "without": differ_plain, "of": scored_pixels,
            },
            "methods": methods.iter().map(|m| method_json(m, &ranges, scored)).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("cannot write --json {}", path.display()))?;
    }
    Ok(())
}

fn print_scores(methods: &[Method], ranges: &[Range]) {
    print!("| method |");
    for r in ranges {
        print!(" {} P | R | F |", r.label());
    }
    println!();
    println!("|---|{}", "---:|".repeat(3 * ranges.len()));
    for m in methods {
        print!("| {} |", m.name);
        for r in ranges {
            let c = m.scorer.sum(r.first, r.last).counts();
            print!(" {:.3} | {:.3} | **{:.3}** |", c.precision(), c.recall(), c.f1());
        }
        println!();
    }
}

fn kpx(n: u64) -> String {
    format!("{:.1}k", n as f64 / 1000.0)
}

fn share(n: u64, of: u64) -> String {
    if of == 0 { kpx(n) } else { format!("{} ({:.0} %)", kpx(n), 100.0 * n as f64 / of as f64) }
}

fn print_breakdown(methods: &[Method], ranges: &[Range]) {
    println!(
        "Where the errors are (pixels; halo = static within {} px of a moving object, lane = static where vehicles \
         pass at other times, off-lane = static elsewhere (trees, verge, barrier); edge = moving within {} px of \
         the outline):",
        cdnet::HALO_PX,
        cdnet::EDGE_PX
    );
    println!();
    println!(
        "| method | frames | FP | FP shadow | FP halo | FP lane | FP off-lane | FN | FN interior | FN edge | \
         FP / FN in privacy masks |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in ranges {
        for m in methods {
            let t = m.scorer.sum(r.first, r.last);
            let c = t.counts();
            let (pfp, pfn) = t.errors_in_mask();
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                m.name,
                r.label(),
                kpx(c.fp),
                share(t.fp(PixelClass::Shadow), c.fp),
                share(t.fp(PixelClass::StaticHalo), c.fp),
                share(t.fp(PixelClass::StaticLane), c.fp),
                share(t.fp(PixelClass::StaticOffLane), c.fp),
                kpx(c.fn_),
                share(t.fn_(PixelClass::MovingInterior), c.fn_),
                share(t.fn_(PixelClass::MovingEdge), c.fn_),
                kpx(pfp),
                kpx(pfn),
            );
        }
    }
}

fn blocks(scored: Range) -> impl Iterator<Item = (u32, u32)> {
    (scored.first..=scored.last).step_by(BLOCK as usize).map(move |a| (a, (a + BLOCK - 1).min(scored.last)))
}

fn print_timeline(ours: &Method, other: &Method, scored: Range) {
    println!("Over time ({} frames a row):", BLOCK);
    println!();
    println!("| frames | moving px | {} P | R | F | FP shadow | {} F |", ours.name, other.name);
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (a, b) in blocks(scored) {
        let t = ours.scorer.sum(a, b);
        let c = t.counts();
        let o = other.scorer.sum(a, b).counts();
        println!(
            "| {a}–{b} | {} | {:.3} | {:.3} | {:.3} | {} | {:.3} |",
            kpx(c.tp + c.fn_),
            c.precision(),
            c.recall(),
            c.f1(),
            share(t.fp(PixelClass::Shadow), c.fp),
            o.f1()
        );
    }
}

/// Scores by image row band: the top rows are far away (small, low-contrast vehicles).
fn print_rows(ours: &Method, other: &Method) {
    println!("By distance (image rows, all scored frames):");
    println!();
    println!("| rows | moving px | {} P | R | F | {} P | R | F |", ours.name, other.name);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for y0 in (0..ours.scorer.height).step_by(GRID_PX) {
        let y1 = y0 + GRID_PX as u32;
        let (c, o) = (ours.scorer.rows(y0, y1), other.scorer.rows(y0, y1));
        println!(
            "| {y0}–{} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            y1.min(ours.scorer.height) - 1,
            kpx(c.tp + c.fn_),
            c.precision(),
            c.recall(),
            c.f1(),
            o.precision(),
            o.recall(),
            o.f1()
        );
    }
}

/// Errors summed over cells of `GRID_PX` × `GRID_PX` pixels (the top rows are far away: small
/// vehicles).
fn print_grid(m: &Method) {
    let (w, h) = (m.scorer.width as usize, m.scorer.height as usize);
    let cell = |map: &[u32], x0: usize, y0: usize| -> u64 {
        (y0..(y0 + GRID_PX).min(h))
            .map(|y| map[y * w + x0..y * w + (x0 + GRID_PX).min(w)].iter().map(|&v| v as u64).sum::<u64>())
            .sum()
    };
    println!("Where in the image, FP / FN in pixels over all scored frames ({}):", m.name);
    println!();
    print!("| y \\ x |");
    for x0 in (0..w).step_by(GRID_PX) {
        print!(" {x0}– |");
    }
    println!();
    println!("|---|{}", "---:|".repeat(w.div_ceil(GRID_PX)));
    for y0 in (0..h).step_by(GRID_PX) {
        print!("| {y0}– |");
        for x0 in (0..w).step_by(GRID_PX) {
            print!(" {} / {} |", kpx(cell(&m.scorer.fp_map, x0, y0)), kpx(cell(&m.scorer.fn_map, x0, y0)));
        }
        println!();
    }
}

fn print_worst(ours: &Method, scored: Range) {
    let mut frames: Vec<(u32, &Tally)> = (scored.first..=scored.last).map(|k| (k, ours.scorer.frame(k))).collect();
    frames.sort_by_key(|(k, t)| (std::cmp::Reverse(t.counts().fp + t.counts().fn_), *k));
    println!("Frames with the most errors ({}):", ours.name);
    println!();
    println!("| frame | moving px | FP | of which shadow | FN | of which interior | F |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (k, t) in frames.iter().take(8) {
        let c = t.counts();
        println!(
            "| {k} | {} | {} | {} | {} | {} | {:.3} |",
            c.tp + c.fn_,
            c.fp,
            t.fp(PixelClass::Shadow),
            c.fn_,
            t.fn_(PixelClass::MovingInterior),
            c.f1()
        );
    }
}

/// Counts scaled so that the largest is white.
fn write_heatmap(path: &Path, map: &[u32], w: u32, h: u32) -> anyhow::Result<()> {
    let max = map.iter().copied().max().unwrap_or(0).max(1) as u64;
    let bytes: Vec<u8> = map.iter().map(|&v| (v as u64 * 255 / max) as u8).collect();
    let m = Mat::from_slice(&bytes)?.reshape(1, h as i32)?.try_clone()?;
    debug_assert_eq!(m.cols() as u32, w);
    write_png(path, &m)
}

fn write_png(path: &Path, m: &Mat) -> anyhow::Result<()> {
    if !imgcodecs::imwrite(path, m, &Vector::new())? {
        bail!("cannot write {}", path.display());
    }
    Ok(())
}

/// The frame, darkened, with true positives green, false positives red (orange on a cast
/// shadow) and false negatives blue.
fn error_overlay(colour: &Mat, classes: &[u8], mask: &[u8]) -> anyhow::Result<Mat> {
    let mut out = colour.try_clone()?;
    let px = out.data_bytes_mut()?;
    for (i, (&c, &m)) in classes.iter().zip(mask).enumerate() {
        let class = PixelClass::ALL[c as usize];
        let bgr: [u8; 3] = match (class.is_positive(), class.is_negative(), m > 127) {
            (true, _, true) => [0, 200, 0],
            (true, _, false) => [255, 64, 0],
            (_, true, true) if class == PixelClass::Shadow => [0, 140, 255],
            (_, true, true) => [0, 0, 255],
            _ => {
                for v in &mut px[3 * i..3 * i + 3] {
                    *v /= 2;
                }
                continue;
            }
        };
        px[3 * i..3 * i + 3].copy_from_slice(&bgr);
    }
    Ok(out)
}

fn tally_json(t: &Tally) -> Value {
    let c = t.counts();
    let (pfp, pfn) = t.errors_in_mask();
    let fp: serde_json::Map<String, Value> =
        PixelClass::ALL.iter().filter(|c| c.is_negative()).map(|&c| (c.key().into(), t.fp(c).into())).collect();
    let fneg: serde_json::Map<String, Value> =
        PixelClass::ALL.iter().filter(|c| c.is_positive()).map(|&c| (c.key().into(), t.fn_(c).into())).collect();
    json!({
        "tp": c.tp, "fp": c.fp, "fn": c.fn_,
        "precision": c.precision(), "recall": c.recall(), "f1": c.f1(),
        "fp_by_class": fp, "fn_by_class": fneg,
        "in_privacy_masks": { "fp": pfp, "fn": pfn },
    })
}

fn method_json(m: &Method, ranges: &[Range], scored: Range) -> Value {
    let mut ranges_json = serde_json::Map::new();
    for r in ranges {
        let mut v = tally_json(&m.scorer.sum(r.first, r.last));
        v["first"] = r.first.into();
        v["last"] = r.last.into();
        ranges_json.insert(r.name.into(), v);
    }
    let timeline: Vec<Value> = blocks(scored)
        .map(|(a, b)| {
            let mut v = tally_json(&m.scorer.sum(a, b));
            v["first"] = a.into();
            v["last"] = b.into();
            v
        })
        .collect();
    json!({
        "key": m.key,
        "name": m.name,
        "global_change_frames": m.global_changes,
        "ranges": ranges_json,
        "timeline": timeline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_upscaling_repeats_pixels() {
        assert_eq!(upscale_nearest(&[1, 2, 3, 4], (2, 2), (4, 2)), vec![1, 1, 2, 2, 3, 3, 4, 4]);
        assert_eq!(upscale_nearest(&[7, 8], (2, 1), (2, 1)), vec![7, 8]);
    }
}
