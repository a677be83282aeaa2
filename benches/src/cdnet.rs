//! CDnet-2014 sequences (changedetection.net) as laid out in `../shared/data/video/cdnet-highway`
//! (see `../shared/data/README.md`): `input/in%06d.jpg` and `groundtruth/gt%06d.png`, frames
//! numbered from one. Labels follow the CDnet rules: 255 moving (positive), 0 static and 50 shadow
//! (negative), 85 outside the region of interest and 170 unknown (not scored).
//!
//! Besides precision and recall, the scorer sorts every error by what the pixel is (shadow, the
//! outline of a vehicle, an empty lane, the roadside, a vehicle's interior), so a score says
//! where a detector loses.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use opencv::core::{self, Mat, Point, Size};
use opencv::imgcodecs;
use opencv::imgproc;
use opencv::prelude::*;

/// The first frame CDnet scores for `highway` (`temporalROI.txt`: earlier frames are warm-up).
pub const FIRST_SCORED: u32 = 470;

/// A scored range of frames, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub name: &'static str,
    pub first: u32,
    pub last: u32,
}

impl Range {
    pub fn label(&self) -> String {
        format!("{}–{}", self.first, self.last)
    }

    pub fn contains(&self, k: u32) -> bool {
        (self.first..=self.last).contains(&k)
    }
}

/// Tuning frames, held-out frames and the whole CDnet range for `highway`.
pub const RANGES: [Range; 3] = [
    Range { name: "tuning", first: FIRST_SCORED, last: 1000 },
    Range { name: "held-out", first: 1001, last: 1700 },
    Range { name: "all", first: FIRST_SCORED, last: 1700 },
];

pub fn input_path(dir: &Path, k: u32) -> PathBuf {
    dir.join("input").join(format!("in{k:06}.jpg"))
}

pub fn groundtruth_path(dir: &Path, k: u32) -> PathBuf {
    dir.join("groundtruth").join(format!("gt{k:06}.png"))
}

/// Number of consecutive input frames from frame 1.
pub fn frame_count(dir: &Path) -> anyhow::Result<u32> {
    let n = (1..).take_while(|&k| input_path(dir, k).is_file()).count() as u32;
    if n == 0 {
        bail!("{} does not exist: expected a CDnet sequence (input/in%06d.jpg)", input_path(dir, 1).display());
    }
    Ok(n)
}

/// Reads an 8-bit image; `flags` are `imgcodecs::IMREAD_*`.
pub fn read_image(path: &Path, flags: i32) -> anyhow::Result<Mat> {
    let m = imgcodecs::imread(path, flags).with_context(|| format!("cannot read {}", path.display()))?;
    if m.empty() {
        bail!("cannot read {}: missing or not an image", path.display());
    }
    if m.depth() != core::CV_8U {
        bail!("{}: expected 8-bit pixels", path.display());
    }
    Ok(m)
}

/// A continuous single-channel 8-bit image as bytes.
pub fn gray_bytes(m: &Mat) -> anyhow::Result<&[u8]> {
    if m.channels() != 1 || !m.is_continuous() {
        bail!("expected a continuous single-channel image, got {} channels", m.channels());
    }
    Ok(m.data_bytes()?)
}

/// What a ground-truth pixel is, for scoring and for telling where a detector loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PixelClass {
    /// 85 (outside the region of interest) or 170 (unknown): not scored.
    NotScored = 0,
    /// Static, and no vehicle covers it in any scored frame: trees, verge, barrier, sky.
    StaticOffLane,
    /// Static, where vehicles pass at other times, more than `HALO_PX` from any moving object.
    StaticLane,
    /// Static, within `HALO_PX` of a moving object: a detector's outline bloat lands here.
    StaticHalo,
    /// 50: a cast shadow (negative in CDnet).
    Shadow,
    /// Moving, more than `EDGE_PX` inside the object's outline.
    MovingInterior,
    /// Moving, within `EDGE_PX` of the outline.
    MovingEdge,
}

pub const CLASSES: usize = 7;

impl PixelClass {
    pub const ALL: [PixelClass; CLASSES] = [
        PixelClass::NotScored,
        PixelClass::StaticOffLane,
        PixelClass::StaticLane,
        PixelClass::StaticHalo,
        PixelClass::Shadow,
        PixelClass::MovingInterior,
        PixelClass::MovingEdge,
    ];

    pub fn is_positive(self) -> bool {
        matches!(self, PixelClass::MovingInterior | PixelClass::MovingEdge)
    }

    pub fn is_negative(self) -> bool {
        !self.is_positive() && self != PixelClass::NotScored
    }

    pub fn key(self) -> &'static str {
        match self {
            PixelClass::NotScored => "not_scored",
            PixelClass::StaticOffLane => "static_off_lane",
            PixelClass::StaticLane => "static_lane",
            PixelClass::StaticHalo => "static_halo",
            PixelClass::Shadow => "shadow",
            PixelClass::MovingInterior => "moving_interior",
            PixelClass::MovingEdge => "moving_edge",
        }
    }
}

/// Static pixels this close (px, at the ground truth's resolution) to a moving object count as
/// its halo.
pub const HALO_PX: i32 = 4;
/// Moving pixels this close to the object's outline count as its edge.
pub const EDGE_PX: i32 = 3;

const MOVING: u8 = 255;
const UNKNOWN: u8 = 170;
const OUTSIDE_ROI: u8 = 85;
const SHADOW: u8 = 50;
const STATIC: u8 = 0;

/// The ground truth of frames `first..=last`, one `PixelClass` per pixel.
pub struct GroundTruth {
    pub width: u32,
    pub height: u32,
    pub first: u32,
    pub last: u32,
    classes: Vec<Vec<u8>>,
}

impl GroundTruth {
    pub fn load(dir: &Path, first: u32, last: u32) -> anyhow::Result<GroundTruth> {
        let mut labels = Vec::with_capacity((last + 1 - first) as usize);
        let mut size = None;
        for k in first..=last {
            let path = groundtruth_path(dir, k);
            let m = read_image(&path, imgcodecs::IMREAD_GRAYSCALE)?;
            let s = (m.cols() as u32, m.rows() as u32);
            if *size.get_or_insert(s) != s {
                bail!(
                    "{}: {}x{}, expected {}x{} like the frames before",
                    path.display(),
                    s.0,
                    s.1,
                    size.unwrap().0,
                    size.unwrap().1
                );
            }
            let bytes = gray_bytes(&m)?;
            if let Some(v) = bytes.iter().find(|v| ![MOVING, UNKNOWN, OUTSIDE_ROI, SHADOW, STATIC].contains(v)) {
                bail!("{}: label {v} is not a CDnet label (0, 50, 85, 170, 255)", path.display());
            }
            labels.push(m);
        }
        let (width, height) = size.expect("at least one frame");
        let n = (width * height) as usize;

        // Where vehicles pass: every pixel that is moving in some scored frame.
        let mut lane = vec![false; n];
        for m in &labels {
            for (l, &v) in lane.iter_mut().zip(gray_bytes(m)?) {
                *l |= v == MOVING;
            }
        }

        let disc = |r: i32| {
            imgproc::get_structuring_element(
                imgproc::MORPH_ELLIPSE,
                Size::new(2 * r + 1, 2 * r + 1),
                Point::new(-1, -1),
            )
        };
        let (halo_k, edge_k) = (disc(HALO_PX)?, disc(EDGE_PX)?);
        let border = imgproc::morphology_default_border_value()?;
        let mut classes = Vec::with_capacity(labels.len());
        let (mut moving, mut grown, mut shrunk) = (Mat::default(), Mat::default(), Mat::default());
        for m in &labels {
            core::compare(m, &core::Scalar::all(MOVING as f64), &mut moving, core::CMP_EQ)?;
            let anchor = Point::new(-1, -1);
            imgproc::dilate(&moving, &mut grown, &halo_k, anchor, 1, core::BORDER_CONSTANT, border)?;
            // Outside the image counts as not moving, so objects cut by the border have an edge there.
            imgproc::erode(&moving, &mut shrunk, &edge_k, anchor, 1, core::BORDER_CONSTANT, core::Scalar::all(0.0))?;
            let (g, s) = (gray_bytes(&grown)?, gray_bytes(&shrunk)?);
            let c: Vec<u8> = gray_bytes(m)?
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    (match v {
                        MOVING if s[i] != 0 => PixelClass::MovingInterior,
                        MOVING => PixelClass::MovingEdge,
                        SHADOW => PixelClass::Shadow,
                        STATIC if g[i] != 0 => PixelClass::StaticHalo,
                        STATIC if lane[i] => PixelClass::StaticLane,
                        STATIC => PixelClass::StaticOffLane,
                        _ => PixelClass::NotScored,
                    }) as u8
                })
                .collect();
            classes.push(c);
        }
        Ok(GroundTruth { width, height, first, last, classes })
    }

    /// Per-pixel `PixelClass as u8` of frame `k`.
    pub fn classes(&self, k: u32) -> &[u8] {
        &self.classes[(k - self.first) as usize]
    }
}

/// Pixel-level outcome counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub tp: u64,
    pub fp: u64,
    pub fn_: u64,
}

impl Counts {
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// One frame's outcome, by pixel class: `[class][0]` pixels predicted static, `[class][1]`
/// predicted moving. `in_mask` counts the same inside an extra region (the config's privacy
/// masks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub by_class: [[u64; 2]; CLASSES],
    pub in_mask: [[u64; 2]; CLASSES],
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        for c in 0..CLASSES {
            for p in 0..2 {
                self.by_class[c][p] += other.by_class[c][p];
                self.in_mask[c][p] += other.in_mask[c][p];
            }
        }
    }

    fn sum(table: &[[u64; 2]; CLASSES], positive: bool, predicted: bool) -> u64 {
        PixelClass::ALL
            .iter()
            .filter(|c| if positive { c.is_positive() } else { c.is_negative() })
            .map(|&c| table[c as usize][predicted as usize])
            .sum()
    }

    pub fn counts(&self) -> Counts {
        Counts {
            tp: Self::sum(&self.by_class, true, true),
            fp: Self::sum(&self.by_class, false, true),
            fn_: Self::sum(&self.by_class, true, false),
        }
    }

    /// Errors inside the extra region: (false positives, false negatives).
    pub fn errors_in_mask(&self) -> (u64, u64) {
        (Self::sum(&self.in_mask, false, true), Self::sum(&self.in_mask, true, false))
    }

    /// False positives on pixels of class `c`.
    pub fn fp(&self, c: PixelClass) -> u64 {
        self.by_class[c as usize][1]
    }

    /// False negatives on pixels of class `c`.
    pub fn fn_(&self, c: PixelClass) -> u64 {
        self.by_class[c as usize][0]
    }
}

/// A detector's tallies, frame by frame, and where its errors fall in the image.
pub struct Scorer {
    pub width: u32,
    pub height: u32,
    first: u32,
    tallies: Vec<Tally>,
    /// Per pixel: true positives, false positives and false negatives summed over the scored
    /// frames.
    pub tp_map: Vec<u32>,
    pub fp_map: Vec<u32>,
    pub fn_map: Vec<u32>,
}

impl Scorer {
    pub fn new(gt: &GroundTruth) -> Scorer {
        let n = (gt.width * gt.height) as usize;
        Scorer {
            width: gt.width,
            height: gt.height,
            first: gt.first,
            tallies: vec![Tally::default(); (gt.last + 1 - gt.first) as usize],
            tp_map: vec![0; n],
            fp_map: vec![0; n],
            fn_map: vec![0; n],
        }
    }

    /// Scores frame `k`. A mask pixel above 127 counts as moving: 255 from our detector, 255
    /// from MOG2 (its shadow label 127 counts as background, as CDnet scores shadows).
    /// `region` marks the extra region tallied separately.
    pub fn add(&mut self, gt: &GroundTruth, k: u32, mask: &[u8], region: &[bool]) -> anyhow::Result<()> {
        let classes = gt.classes(k);
        if mask.len() != classes.len() {
            bail!("frame {k}: mask has {} pixels, the ground truth {}x{}", mask.len(), gt.width, gt.height);
        }
        let t = &mut self.tallies[(k - self.first) as usize];
        for (i, (&c, &m)) in classes.iter().zip(mask).enumerate() {
            let predicted = m > 127;
            t.by_class[c as usize][predicted as usize] += 1;
            if region[i] {
                t.in_mask[c as usize][predicted as usize] += 1;
            }
            let class = PixelClass::ALL[c as usize];
            if predicted && class.is_positive() {
                self.tp_map[i] += 1;
            } else if predicted && class.is_negative() {
                self.fp_map[i] += 1;
            } else if !predicted && class.is_positive() {
                self.fn_map[i] += 1;
            }
        }
        Ok(())
    }

    /// Counts over the pixels of rows `y0..y1`, all scored frames.
    pub fn rows(&self, y0: u32, y1: u32) -> Counts {
        let (a, b) = ((y0 * self.width) as usize, (y1.min(self.height) * self.width) as usize);
        let sum = |m: &[u32]| m[a..b].iter().map(|&v| v as u64).sum::<u64>();
        Counts { tp: sum(&self.tp_map), fp: sum(&self.fp_map), fn_: sum(&self.fn_map) }
    }

    pub fn frame(&self, k: u32) -> &Tally {
        &self.tallies[(k - self.first) as usize]
    }

    /// The tallies of frames `first..=last` added up.
    pub fn sum(&self, first: u32, last: u32) -> Tally {
        let mut t = Tally::default();
        for k in first..=last {
            t.add(self.frame(k));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_recall_and_f1_follow_their_definitions() {
        let c = Counts { tp: 6, fp: 2, fn_: 4 };
        assert!((c.precision() - 0.75).abs() < 1e-12);
        assert!((c.recall() - 0.6).abs() < 1e-12);
        assert!((c.f1() - 2.0 * 0.75 * 0.6 / 1.35).abs() < 1e-12);
        assert_eq!(Counts::default().f1(), 0.0);
    }

    #[test]
    fn tallies_split_errors_by_class() {
        let mut t = Tally::default();
        t.by_class[PixelClass::Shadow as usize][1] = 3; // shadow called moving
        t.by_class[PixelClass::MovingEdge as usize][0] = 2; // edge missed
        t.by_class[PixelClass::MovingInterior as usize][1] = 5; // interior found
        t.by_class[PixelClass::NotScored as usize][1] = 100; // never counted
        assert_eq!(t.counts(), Counts { tp: 5, fp: 3, fn_: 2 });
        assert_eq!(t.fp(PixelClass::Shadow), 3);
        assert_eq!(t.fn_(PixelClass::MovingEdge), 2);
    }
}
