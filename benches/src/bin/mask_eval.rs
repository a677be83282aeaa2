//! Scores the masks of a `vakt redact --masks DIR` run against MOTChallenge ground truth
//! (`frame,id,left,top,width,height,conf,...`, rows with conf = 1; video frame k is gt frame k,
//! both from 1): coverage (the share of person boxes at least 90 % masked), over-masking (the
//! share of pixels outside every person box that are masked), and the frames where a person is
//! left uncovered (under 90 %) or visible (under 50 % masked). With `--keep-gt ID`, that person
//! is the subject of a subject-access run: left out of coverage, and reported as how much of
//! their box stayed visible. Prints one JSON object.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use opencv::imgcodecs;
use opencv::prelude::*;
use serde_json::json;

use vakt_core::redaction::MaskScore;

#[derive(Parser)]
struct Args {
    /// MOTChallenge gt.txt.
    #[arg(long)]
    gt: PathBuf,
    /// The `--masks` folder of `vakt redact` (000001.png, ...; 255 = masked).
    #[arg(long)]
    masks: PathBuf,
    /// The ground-truth id of the person a subject-access run kept visible.
    #[arg(long)]
    keep_gt: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let text = std::fs::read_to_string(&a.gt).with_context(|| format!("cannot read {}", a.gt.display()))?;
    // frame -> [(id, box)]
    let mut gt: BTreeMap<u64, Vec<(u64, [f64; 4])>> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 7 {
            anyhow::bail!("{}:{}: fewer than 7 fields", a.gt.display(), n + 1);
        }
        let num = |i: usize| -> anyhow::Result<f64> {
            f[i].parse().with_context(|| format!("{}:{}: field {} is {:?}", a.gt.display(), n + 1, i + 1, f[i]))
        };
        if num(6)? != 1.0 {
            continue;
        }
        gt.entry(num(0)? as u64).or_default().push((num(1)? as u64, [num(2)?, num(3)?, num(4)?, num(5)?]));
    }
    let mut total = MaskScore::default();
    let (mut frames, mut uncovered_frames, mut visible_frames) = (0u64, 0u64, 0u64);
    let mut worst: Vec<serde_json::Value> = Vec::new();
    let (mut kept_frames, mut kept_visible_sum) = (0u64, 0.0f64);
    for frame in 1u64.. {
        let path = a.masks.join(format!("{frame:06}.png"));
        if !path.is_file() {
            break;
        }
        let img = imgcodecs::imread(&path, imgcodecs::IMREAD_GRAYSCALE)?;
        let (w, h) = (img.cols() as u32, img.rows() as u32);
        let mask = img.data_bytes()?.to_vec();
        frames += 1;
        let people = gt.get(&frame).cloned().unwrap_or_default();
        let (kept, others): (Vec<_>, Vec<_>) = people.iter().partition(|(id, _)| Some(*id) == a.keep_gt);
        let boxes: Vec<[f64; 4]> = others.iter().map(|(_, b)| *b).collect();
        let s = MaskScore::frame(&mask, w, h, &boxes, 0.9);
        let all_boxes: Vec<[f64; 4]> = people.iter().map(|(_, b)| *b).collect();
        // over-masking counts every person box as a person, the kept one too
        let s_all = MaskScore::frame(&mask, w, h, &all_boxes, 0.9);
        total.add(MaskScore { over_masked: s_all.over_masked, outside: s_all.outside, ..s });
        if s.covered < s.boxes {
            uncovered_frames += 1;
            if worst.len() < 20 {
                let ids: Vec<u64> = others
                    .iter()
                    .filter(|(_, b)| MaskScore::frame(&mask, w, h, &[*b], 0.9).covered == 0)
                    .map(|(id, _)| *id)
                    .collect();
                worst.push(json!({"frame": frame, "uncovered_gt_ids": ids}));
            }
        }
        if MaskScore::frame(&mask, w, h, &boxes, 0.5).covered < s.boxes {
            visible_frames += 1;
        }
        for (_, b) in kept {
            // the kept person's visible share: 1 - masked share
            let masked = (1..=20)
                .rev()
                .map(|k| k as f64 / 20.0)
                .find(|share| MaskScore::frame(&mask, w, h, &[b], *share).covered == 1)
                .unwrap_or(0.0);
            kept_frames += 1;
            kept_visible_sum += 1.0 - masked;
        }
    }
    if frames == 0 {
        anyhow::bail!("{}: no masks (000001.png, ...)", a.masks.display());
    }
    let mut out = json!({
        "frames": frames,
        "person_boxes": total.boxes,
        "covered_boxes": total.covered,
        "coverage": total.coverage(),
        "over_masking": total.over_masking(),
        "frames_with_a_person_under_90pct_masked": uncovered_frames,
        "frames_with_a_person_under_50pct_masked": visible_frames,
        "first_uncovered": worst,
    });
    if a.keep_gt.is_some() {
        out["kept_frames"] = json!(kept_frames);
        out["kept_mean_visible_share"] =
            json!(if kept_frames > 0 { kept_visible_sum / kept_frames as f64 } else { 0.0 });
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
