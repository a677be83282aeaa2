//! Runs the box's rules (vakt_core::rules, with the zones, lines and thresholds of a config) over a
//! TRACKS.jsonl file: the rule truth of the analytics evaluation, when the tracks are the ground
//! truth (benches/eval/gt_tracks.py). Velocities are estimated as the box's tracker does: from
//! box displacements at the detector's cadence (`detect.interval` of media time), smoothed
//! 0.6 old + 0.4 new. Writes rule events as JSON lines with the fields
//! benches/eval/rule_eval.py reads (kind, phase, id, zone, media_time_s, onset_media_time_s, attrs).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use serde_json::json;

use vakt_core::detect::ObjectClass;
use vakt_core::lifecycle::TransitionPhase;
use vakt_core::rules::{RuleEngine, RuleObject};

#[derive(Parser)]
struct Args {
    /// The evaluation config (zones, lines, [rules], [events]).
    #[arg(long)]
    config: PathBuf,
    /// TRACKS.jsonl: one line per frame, boxes in pixels.
    #[arg(long)]
    tracks: PathBuf,
    #[arg(long)]
    width: f64,
    #[arg(long)]
    height: f64,
    /// Frames per second of the video (media time of frame N is (N - 1) / fps).
    #[arg(long)]
    fps: f64,
    #[arg(long)]
    events: PathBuf,
}

struct Seen {
    t: f64,
    centre: (f64, f64),
    velocity: Option<(f64, f64)>,
    first: f64,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let cfg = vakt_core::config::load(&a.config)?;
    let mut engine = RuleEngine::from_config(&cfg);
    let input = std::fs::File::open(&a.tracks).with_context(|| format!("cannot read {}", a.tracks.display()))?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&a.events)?);
    let mut seen: HashMap<u64, Seen> = HashMap::new();
    let cadence = cfg.detect.interval.as_secs_f64();
    let mut last_t = 0.0;
    let write = |evs: Vec<vakt_core::rules::RuleEvent>, out: &mut dyn Write| -> anyhow::Result<()> {
        for e in evs {
            let tr = e.transition;
            let phase = match tr.phase {
                TransitionPhase::Start => "start",
                TransitionPhase::Update => "update",
                TransitionPhase::End => "end",
                TransitionPhase::Instant => "instant",
            };
            let id = format!(
                "{}/{}/{}/{}",
                e.kind.as_str(),
                e.zone.as_deref().unwrap_or(""),
                e.subject.as_deref().unwrap_or(""),
                tr.serial
            );
            let line = json!({
                "kind": e.kind.as_str(), "phase": phase, "id": id, "zone": e.zone,
                "media_time_s": tr.at, "onset_media_time_s": tr.onset, "attrs": e.attrs,
            });
            writeln!(out, "{line}")?;
        }
        Ok(())
    };
    for (n, line) in std::io::BufReader::new(input).lines().enumerate() {
        let line = line?;
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{} line {}", a.tracks.display(), n + 1))?;
        let frame = v["frame"].as_u64().with_context(|| format!("line {}: no frame", n + 1))?;
        let t = (frame - 1) as f64 / a.fps;
        last_t = t;
        let mut objects = Vec::new();
        for o in v["objects"].as_array().into_iter().flatten() {
            let id = o["track"].as_u64().context("track")?;
            let class = ObjectClass::parse(o["class"].as_str().unwrap_or("")).context("class")?;
            let b: Vec<f64> = o["box"].as_array().context("box")?.iter().filter_map(|x| x.as_f64()).collect();
            anyhow::ensure!(b.len() == 4, "line {}: box needs 4 numbers", n + 1);
            let centre = (b[0] + b[2] / 2.0, b[1] + b[3] / 2.0);
            // the tracker's velocity: the first displacement, then smoothed 0.6 old + 0.4 new
            let s = seen.entry(id).or_insert(Seen { t, centre, velocity: None, first: t });
            // a microsecond of slack, as the detector's schedule has
            if t > s.t && t - s.t + 1e-6 >= cadence {
                let inst = ((centre.0 - s.centre.0) / (t - s.t), (centre.1 - s.centre.1) / (t - s.t));
                s.velocity = Some(match s.velocity {
                    None => inst,
                    Some(v) => (0.6 * v.0 + 0.4 * inst.0, 0.6 * v.1 + 0.4 * inst.1),
                });
                s.t = t;
                s.centre = centre;
            }
            let (vx, vy) = s.velocity.unwrap_or((0.0, 0.0));
            objects.push(RuleObject {
                track: id,
                class,
                bbox: [b[0] / a.width, b[1] / a.height, b[2] / a.width, b[3] / a.height],
                coasting: false,
                missed: false,
                speed: ((vx / a.width).powi(2) + (vy / a.height).powi(2)).sqrt(),
                speed_heights: if b[3] > 0.0 { (vx * vx + vy * vy).sqrt() / b[3] } else { 0.0 },
                age_s: t - s.first,
            });
        }
        write(engine.update(t, &objects), &mut out)?;
    }
    write(engine.finish(last_t), &mut out)?;
    out.flush()?;
    Ok(())
}
