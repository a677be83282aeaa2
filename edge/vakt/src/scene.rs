//! The tamper stage of analysis and the commissioned scene reference on disk.
//! Design: `edge/docs/design/tamper.md`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use vakt_core::config::{Config, TamperConfig};
use vakt_core::tamper::{SceneMeasurement, TamperPolicy, TamperTransition};
use vakt_vision::GrayFrame;
use vakt_vision::tamper::{ReferenceBuilder, SceneMeter, SceneReference};

/// `state_dir/scene-reference.json`.
pub fn reference_path(state_dir: &Path) -> PathBuf {
    state_dir.join("scene-reference.json")
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceFile {
    v: u32,
    /// RFC 3339 time of commissioning.
    learned_at: String,
    /// Checks the reference was learned from.
    samples: u32,
    /// `motion.width` the reference was learned at: sharpness depends on it.
    analysis_width: u32,
    /// sha256 of the privacy masks it was learned with: they shape structure and sharpness.
    masks_digest: String,
    width: u32,
    height: u32,
    sharpness: f64,
    /// Gradient magnitude, row by row, rounded to 0.01.
    structure: Vec<f32>,
}

/// A reference as stored, with where it came from.
#[derive(Debug, Clone)]
pub struct StoredReference {
    pub reference: SceneReference,
    pub learned_at: String,
    pub samples: u32,
    pub analysis_width: u32,
    pub masks_digest: String,
    /// sha256 of the file's bytes.
    pub digest: String,
}

/// Digest of the privacy masks (their points, in order): a reference is valid only with them.
pub fn masks_digest(cfg: &Config) -> String {
    let pts: Vec<&[[f64; 2]]> = cfg.privacy.masks.iter().map(|m| m.polygon.points()).collect();
    hex::encode(Sha256::digest(serde_json::to_vec(&pts).unwrap_or_default()))
}

impl StoredReference {
    /// Why this reference cannot be used with `cfg`, if it cannot.
    pub fn misfit(&self, cfg: &Config) -> Option<String> {
        if self.analysis_width != cfg.motion.width {
            return Some(format!(
                "it was learned at motion.width = {}, the config now says {}",
                self.analysis_width, cfg.motion.width
            ));
        }
        if self.masks_digest != masks_digest(cfg) {
            return Some("the privacy masks changed since it was learned".into());
        }
        None
    }
}

pub fn save_reference(
    path: &Path,
    r: &SceneReference,
    learned_at: &str,
    samples: u32,
    cfg: &Config,
) -> anyhow::Result<String> {
    let file = ReferenceFile {
        v: 1,
        learned_at: learned_at.to_string(),
        samples,
        analysis_width: cfg.motion.width,
        masks_digest: masks_digest(cfg),
        width: r.width,
        height: r.height,
        sharpness: r.sharpness,
        structure: r.structure.iter().map(|v| (v * 100.0).round() / 100.0).collect(),
    };
    let bytes = serde_json::to_vec(&file)?;
    vakt_core::counters::write_durable(path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Loads the reference; `Ok(None)` when the box was never commissioned.
pub fn load_reference(path: &Path) -> anyhow::Result<Option<StoredReference>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read the scene reference {}", path.display())),
    };
    let f: ReferenceFile = serde_json::from_slice(&bytes).with_context(|| {
        format!("the scene reference {} is damaged; commission again with `vakt commission --force`", path.display())
    })?;
    let cells = (f.width as u64).checked_mul(f.height as u64);
    anyhow::ensure!(
        f.v == 1
            && cells == Some(f.structure.len() as u64)
            && f.sharpness.is_finite()
            && f.sharpness > 0.0
            && f.structure.iter().all(|v| v.is_finite()),
        "the scene reference {} is inconsistent; commission again with `vakt commission --force`",
        path.display()
    );
    Ok(Some(StoredReference {
        reference: SceneReference { width: f.width, height: f.height, structure: f.structure, sharpness: f.sharpness },
        learned_at: f.learned_at,
        samples: f.samples,
        analysis_width: f.analysis_width,
        masks_digest: f.masks_digest,
        digest: hex::encode(Sha256::digest(&bytes)),
    }))
}

/// Where the reference comes from during analysis.
pub enum ReferenceSource {
    /// Commissioned (or given with `--scene-reference`).
    Known(SceneReference),
    /// Learned from the first `tamper.reference_time` of this input (offline replay without a
    /// reference, and `vakt commission` itself).
    LearnFromStart,
    /// None: too_blurry and scene_changed stay off (an uncommissioned live box).
    Missing,
}

/// Measures the scene on a media-time schedule and turns measurements into tamper transitions.
pub struct TamperStage {
    meter: SceneMeter,
    policy: TamperPolicy,
    reference: Option<SceneReference>,
    learning: Option<(ReferenceBuilder, f64)>,
    /// The builder, kept once learning ended (sample count, dark and bright maxima).
    learned_from: Option<ReferenceBuilder>,
    interval: f64,
    learn_for: f64,
    next_check: Option<f64>,
}

impl TamperStage {
    /// `masks`: the privacy masks applied upstream (left out of every measurement).
    pub fn new(cfg: &TamperConfig, masks: Vec<vakt_core::geometry::Polygon>, source: ReferenceSource) -> Self {
        let (reference, learning) = match source {
            ReferenceSource::Known(r) => (Some(r), None),
            ReferenceSource::LearnFromStart => (None, Some((ReferenceBuilder::default(), f64::NAN))),
            ReferenceSource::Missing => (None, None),
        };
        TamperStage {
            meter: SceneMeter::new(masks),
            policy: TamperPolicy::new(cfg.thresholds),
            reference,
            learning,
            learned_from: None,
            interval: cfg.check_interval.as_secs_f64(),
            learn_for: cfg.reference_time.as_secs_f64(),
            next_check: None,
        }
    }

    /// Feeds one analysed frame; returns the transitions of this check (if one was due).
    pub fn process(&mut self, frame: GrayFrame<'_>, t: f64) -> anyhow::Result<Vec<TamperTransition>> {
        self.meter.update(frame, t)?;
        if self.next_check.is_some_and(|n| t + 1e-9 < n) {
            return Ok(Vec::new());
        }
        self.next_check = Some(t + self.interval);
        let sample = self.meter.sample(frame)?;
        if let Some((builder, until)) = &mut self.learning {
            if until.is_nan() {
                *until = t + self.learn_for;
            }
            builder.add(&sample);
            if t + 1e-9 >= *until {
                self.reference = builder.build();
                self.learned_from = self.learning.take().map(|(b, _)| b);
                tracing::info!(at_media_s = t, "scene reference learned from the start of the input");
            }
        }
        let (sharpness_ratio, similarity) = match &self.reference {
            Some(r) => {
                let (a, b) = sample.compare(r);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        tracing::debug!(
            target: "vakt::tamper",
            t,
            dark = sample.dark_fraction,
            bright = sample.bright_fraction,
            sharpness_ratio = sharpness_ratio.unwrap_or(f64::NAN),
            similarity = similarity.unwrap_or(f64::NAN),
            "scene check"
        );
        Ok(self.policy.observe(SceneMeasurement {
            t,
            dark_fraction: sample.dark_fraction,
            bright_fraction: sample.bright_fraction,
            sharpness_ratio,
            similarity,
        }))
    }

    /// Ends open conditions (signal lost, shutdown).
    pub fn finish(&mut self, t: f64) -> Vec<TamperTransition> {
        self.next_check = None;
        self.policy.finish(t)
    }

    pub fn active(&self) -> Vec<vakt_core::event::EventKind> {
        self.policy.active()
    }

    /// The reference once learning has ended, with what it was learned from.
    pub fn learned(&self) -> Option<(&SceneReference, &ReferenceBuilder)> {
        self.reference.as_ref().zip(self.learned_from.as_ref())
    }
}
