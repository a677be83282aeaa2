//! Scene measurements for tamper detection: how dark, how saturated, how sharp compared with the
//! commissioned reference, and how much of the reference's static structure is still there.
//! Design: `edge/docs/design/tamper.md` (measurements S1–S5).

use opencv::core::{self, Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;

use vakt_core::geometry::{Polygon, Raster};

use crate::motion::{GrayFrame, VisionError};

/// Width of the low-resolution scene average used for structure (S4).
pub const STRUCTURE_WIDTH: u32 = 160;
/// Time constant of the scene average: long enough to blur passers-by, short enough to follow a
/// turned camera within seconds (S4).
pub const AVERAGE_TAU_S: f64 = 2.0;
/// Grey levels at or below which a pixel counts as dark, at or above which as saturated (S1, S2).
pub const DARK_LEVEL: u8 = 28;
pub const BRIGHT_LEVEL: u8 = 245;

/// What the scene looked like when the installer commissioned the box. Valid only for the
/// analysis width and privacy masks it was learned with (the caller records and checks them).
#[derive(Debug, Clone, PartialEq)]
pub struct SceneReference {
    pub width: u32,
    pub height: u32,
    /// Gradient magnitude of the low-resolution scene average, row by row.
    pub structure: Vec<f32>,
    /// Median contrast-normalised sharpness over the learning window.
    pub sharpness: f64,
}

/// One check's raw measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneSample {
    pub dark_fraction: f64,
    pub bright_fraction: f64,
    pub sharpness: f64,
    /// Gradient magnitude of the scene average (`STRUCTURE_WIDTH` wide).
    pub structure: Vec<f32>,
    pub structure_size: (u32, u32),
}

impl SceneSample {
    /// Sharpness relative to the reference, and structure similarity (ZNCC) with it.
    pub fn compare(&self, r: &SceneReference) -> (f64, f64) {
        let ratio = if r.sharpness > 0.0 { self.sharpness / r.sharpness } else { 1.0 };
        let sim = if self.structure_size == (r.width, r.height) { zncc(&self.structure, &r.structure) } else { 0.0 };
        (ratio, sim)
    }
}

/// Zero-mean normalised cross-correlation of two equally long vectors (S5); 0 for flat input.
pub fn zncc(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    if n == 0.0 {
        return 0.0;
    }
    let (ma, mb) = (a.iter().map(|&v| v as f64).sum::<f64>() / n, b.iter().map(|&v| v as f64).sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa <= 1e-12 || sbb <= 1e-12 { 0.0 } else { sab / (saa * sbb).sqrt() }
}

/// Keeps the slow scene average and takes samples. Pixels under a privacy mask are filled with a
/// constant before analysis: they are neither dark nor structure, so they are left out of every
/// measurement (S0), with a margin at the structure resolution for the mask's own edges.
pub struct SceneMeter {
    avg: Mat,
    small: Mat,
    smallf: Mat,
    last_t: Option<f64>,
    tmp: Mat,
    masks: Vec<Polygon>,
    /// 255 where a pixel of the analysis frame counts; the same eroded for sharpness.
    valid: Option<(u32, u32, Mat, Mat)>,
    /// 1.0 where a structure cell counts, at the structure size.
    structure_weight: Option<(u32, u32, Vec<f32>)>,
}

impl Default for SceneMeter {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl SceneMeter {
    /// `masks`: the privacy masks applied upstream.
    pub fn new(masks: Vec<Polygon>) -> Self {
        SceneMeter {
            avg: Mat::default(),
            small: Mat::default(),
            smallf: Mat::default(),
            last_t: None,
            tmp: Mat::default(),
            masks,
            valid: None,
            structure_weight: None,
        }
    }

    /// (valid, valid eroded by 2 px): the masks' own hard edges must not count as sharpness.
    fn valid_masks(&mut self, w: u32, h: u32) -> Result<(Mat, Mat), VisionError> {
        if !matches!(&self.valid, Some((vw, vh, _, _)) if (*vw, *vh) == (w, h)) {
            let mut m = Raster::conservative(&self.masks, w, h).to_mask();
            m.iter_mut().for_each(|v| *v = 255 - *v);
            let valid = Mat::from_slice(&m)?.reshape(1, h as i32)?.try_clone()?;
            let k = imgproc::get_structuring_element(imgproc::MORPH_RECT, Size::new(5, 5), core::Point::new(-1, -1))?;
            let mut inner = Mat::default();
            imgproc::erode(
                &valid,
                &mut inner,
                &k,
                core::Point::new(-1, -1),
                1,
                core::BORDER_CONSTANT,
                core::Scalar::all(255.0),
            )?;
            self.valid = Some((w, h, valid, inner));
        }
        let (_, _, v, i) = self.valid.as_ref().expect("set above");
        Ok((v.try_clone()?, i.try_clone()?))
    }

    fn structure_weights(&mut self, w: u32, h: u32) -> &[f32] {
        if !matches!(&self.structure_weight, Some((sw, sh, _)) if (*sw, *sh) == (w, h)) {
            // masked cells and a margin around them: the downscale (1 cell), the blur (σ 1.5:
            // 5 cells) and Sobel (1 cell) carry the mask's edge this far
            const MARGIN: i64 = 8;
            let r = Raster::conservative(&self.masks, w, h);
            let mut wts = vec![1.0f32; (w * h) as usize];
            for y in 0..h as i64 {
                for x in 0..w as i64 {
                    if r.contains(x as u32, y as u32) {
                        for yy in (y - MARGIN).max(0)..(y + MARGIN + 1).min(h as i64) {
                            for xx in (x - MARGIN).max(0)..(x + MARGIN + 1).min(w as i64) {
                                wts[(yy * w as i64 + xx) as usize] = 0.0;
                            }
                        }
                    }
                }
            }
            self.structure_weight = Some((w, h, wts));
        }
        &self.structure_weight.as_ref().expect("set above").2
    }

    fn mat<'a>(frame: &GrayFrame<'a>) -> Result<opencv::boxed_ref::BoxedRef<'a, Mat>, VisionError> {
        if frame.data.len() != (frame.width * frame.height) as usize {
            return Err(VisionError::BadFrame { width: frame.width, height: frame.height, got: frame.data.len() });
        }
        Ok(Mat::new_rows_cols_with_data(frame.height as i32, frame.width as i32, frame.data)?)
    }

    /// Feeds every analysed frame: updates the low-resolution scene average (S4).
    pub fn update(&mut self, frame: GrayFrame<'_>, t: f64) -> Result<(), VisionError> {
        let src = Self::mat(&frame)?;
        let h = ((frame.height as u64 * STRUCTURE_WIDTH as u64 + frame.width as u64 / 2) / frame.width as u64).max(1);
        imgproc::resize(
            &src,
            &mut self.small,
            Size::new(STRUCTURE_WIDTH as i32, h as i32),
            0.0,
            0.0,
            imgproc::INTER_AREA,
        )?;
        self.small.convert_to(&mut self.smallf, core::CV_32F, 1.0, 0.0)?;
        let fresh = self.avg.size()? != self.smallf.size()?;
        match self.last_t {
            Some(last) if !fresh && t > last => {
                let alpha = 1.0 - (-(t - last) / AVERAGE_TAU_S).exp();
                imgproc::accumulate_weighted(&self.smallf, &mut self.avg, alpha, &core::no_array())?;
            }
            Some(_) if !fresh => {}
            _ => self.smallf.copy_to(&mut self.avg)?,
        }
        self.last_t = Some(t);
        Ok(())
    }

    /// Measures `frame` (S1–S4). Call `update` with the same frame first.
    pub fn sample(&mut self, frame: GrayFrame<'_>) -> Result<SceneSample, VisionError> {
        let (valid, inner) = self.valid_masks(frame.width, frame.height)?;
        let (mut n, mut dark, mut bright) = (0usize, 0usize, 0usize);
        for (&v, &ok) in frame.data.iter().zip(valid.data_bytes()?) {
            if ok != 0 {
                n += 1;
                dark += usize::from(v <= DARK_LEVEL);
                bright += usize::from(v >= BRIGHT_LEVEL);
            }
        }
        let n = n.max(1) as f64;
        let (dark, bright) = (dark as f64 / n, bright as f64 / n);

        // S3: sharpness = var(Laplacian) / var(image) over the unmasked pixels: focus,
        // independent of gain and exposure.
        let src = Self::mat(&frame)?;
        imgproc::laplacian(&src, &mut self.tmp, core::CV_32F, 3, 1.0, 0.0, core::BORDER_REPLICATE)?;
        let (mut m, mut sd) = (Mat::default(), Mat::default());
        core::mean_std_dev(&self.tmp, &mut m, &mut sd, &inner)?;
        let lap_var = sd.at::<f64>(0)?.powi(2);
        core::mean_std_dev(&src, &mut m, &mut sd, &inner)?;
        let img_var = sd.at::<f64>(0)?.powi(2);
        let sharpness = if img_var > 1.0 { lap_var / img_var } else { 0.0 };

        let (structure, size) = self.structure()?;
        Ok(SceneSample { dark_fraction: dark, bright_fraction: bright, sharpness, structure, structure_size: size })
    }

    /// S4: gradient magnitude of the scene average, lightly smoothed so that a slightly soft
    /// picture keeps its structure.
    fn structure(&mut self) -> Result<(Vec<f32>, (u32, u32)), VisionError> {
        if self.avg.empty() {
            return Ok((Vec::new(), (0, 0)));
        }
        let mut blurred = Mat::default();
        imgproc::gaussian_blur(&self.avg, &mut blurred, Size::new(0, 0), 1.5, 1.5, core::BORDER_REPLICATE)?;
        let (mut gx, mut gy, mut mag) = (Mat::default(), Mat::default(), Mat::default());
        imgproc::sobel(&blurred, &mut gx, core::CV_32F, 1, 0, 3, 1.0, 0.0, core::BORDER_REPLICATE)?;
        imgproc::sobel(&blurred, &mut gy, core::CV_32F, 0, 1, 3, 1.0, 0.0, core::BORDER_REPLICATE)?;
        core::magnitude(&gx, &gy, &mut mag)?;
        let size = (mag.cols() as u32, mag.rows() as u32);
        let weights = self.structure_weights(size.0, size.1).to_vec();
        let data: Vec<f32> = mag.data_typed::<f32>()?.iter().zip(&weights).map(|(v, w)| v * w).collect();
        Ok((data, size))
    }
}

/// Learns a `SceneReference` from samples over the commissioning window.
#[derive(Debug, Default)]
pub struct ReferenceBuilder {
    sum: Vec<f64>,
    size: (u32, u32),
    sharpness: Vec<f64>,
    samples: u32,
    /// Largest dark and saturated shares seen while learning.
    pub max_dark: f64,
    pub max_bright: f64,
}

impl ReferenceBuilder {
    pub fn add(&mut self, s: &SceneSample) {
        if s.structure.is_empty() {
            return;
        }
        if self.size != s.structure_size {
            self.sum = vec![0.0; s.structure.len()];
            self.size = s.structure_size;
            self.sharpness.clear();
            self.samples = 0;
        }
        for (a, &v) in self.sum.iter_mut().zip(&s.structure) {
            *a += v as f64;
        }
        self.sharpness.push(s.sharpness);
        self.samples += 1;
        self.max_dark = self.max_dark.max(s.dark_fraction);
        self.max_bright = self.max_bright.max(s.bright_fraction);
    }

    pub fn samples(&self) -> u32 {
        self.samples
    }

    /// The reference, or `None` before any sample.
    pub fn build(&self) -> Option<SceneReference> {
        if self.samples == 0 {
            return None;
        }
        let mut sh = self.sharpness.clone();
        sh.sort_by(f64::total_cmp);
        Some(SceneReference {
            width: self.size.0,
            height: self.size.1,
            structure: self.sum.iter().map(|&v| (v / self.samples as f64) as f32).collect(),
            sharpness: sh[sh.len() / 2],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A structured, non-periodic synthetic scene (chirped bars and a block), shifted by `dx`.
    fn scene(w: u32, h: u32, dx: i32) -> Vec<u8> {
        (0..h)
            .flat_map(|y| {
                (0..w).map(move |x| {
                    let xs = x as i32 - dx;
                    // a chirp: bar widths change along x, so no shift realigns the pattern
                    let bars = if ((xs + 400) * (xs + 400) / 900) % 2 == 0 { 60 } else { 170 };
                    let block = if (40..90).contains(&(y as i32)) && (100..180).contains(&xs) { 230 } else { 0 };
                    ((bars + block) as u32).min(250) as u8
                })
            })
            .collect()
    }

    fn blur(data: &[u8], w: u32, h: u32, sigma: f64) -> Vec<u8> {
        let src = Mat::new_rows_cols_with_data(h as i32, w as i32, data).unwrap();
        let mut out = Mat::default();
        imgproc::gaussian_blur(&src, &mut out, Size::new(0, 0), sigma, sigma, core::BORDER_REPLICATE).unwrap();
        out.data_bytes().unwrap().to_vec()
    }

    fn learn(frames: &[Vec<u8>], w: u32, h: u32) -> (SceneMeter, SceneReference) {
        let mut m = SceneMeter::default();
        let mut b = ReferenceBuilder::default();
        for (i, f) in frames.iter().enumerate() {
            let g = GrayFrame { width: w, height: h, data: f };
            m.update(g, i as f64 * 0.1).unwrap();
            b.add(&m.sample(g).unwrap());
        }
        (m, b.build().unwrap())
    }

    fn settle(m: &mut SceneMeter, f: &[u8], w: u32, h: u32, t0: f64) -> SceneSample {
        let g = GrayFrame { width: w, height: h, data: f };
        for i in 0..100 {
            m.update(g, t0 + i as f64 * 0.1).unwrap();
        }
        m.sample(g).unwrap()
    }

    #[test]
    fn each_sabotage_moves_its_own_measurement() {
        let (w, h) = (320, 240);
        let base = scene(w, h, 0);
        let (mut m, r) = learn(&vec![base.clone(); 30], w, h);

        let same = settle(&mut m, &base, w, h, 10.0);
        let (ratio, sim) = same.compare(&r);
        assert!((ratio - 1.0).abs() < 0.05 && sim > 0.95, "untouched: ratio {ratio}, similarity {sim}");
        assert!(same.dark_fraction < 0.5 && same.bright_fraction < 0.1);

        let dark = settle(&mut m, &vec![5u8; (w * h) as usize], w, h, 30.0);
        assert!(dark.dark_fraction > 0.99);

        let white = settle(&mut m, &vec![255u8; (w * h) as usize], w, h, 50.0);
        assert!(white.bright_fraction > 0.99);

        let soft = settle(&mut m, &blur(&base, w, h, 3.0), w, h, 70.0);
        let (ratio, sim) = soft.compare(&r);
        assert!(ratio < 0.2, "defocused: sharpness ratio {ratio}");
        assert!(sim > 0.6, "defocus must not look like a moved camera: similarity {sim}");

        let moved = settle(&mut m, &scene(w, h, 37), w, h, 90.0);
        let (_, sim) = moved.compare(&r);
        assert!(sim < 0.45, "moved: similarity {sim}");
    }

    #[test]
    fn masked_pixels_are_neither_dark_nor_structure() {
        let (w, h) = (320u32, 240u32);
        // 70 % of the frame under a privacy mask, filled as the mask stage does
        let mask = Polygon::new(vec![[0.0, 0.0], [0.7, 0.0], [0.7, 1.0], [0.0, 1.0]]).unwrap();
        let fill = |f: &mut Vec<u8>| {
            for y in 0..h {
                for x in 0..(w * 7 / 10) {
                    f[(y * w + x) as usize] = 16;
                }
            }
        };
        let mut base = scene(w, h, 0);
        fill(&mut base);
        let mut m = SceneMeter::new(vec![mask.clone()]);
        let g = GrayFrame { width: w, height: h, data: &base };
        m.update(g, 0.0).unwrap();
        let s = m.sample(g).unwrap();
        assert!(s.dark_fraction < 0.1, "the mask counted as dark: {}", s.dark_fraction);
        // a flat grey picture behind the same mask has no structure left, and no sharpness
        let mut flat = vec![128u8; (w * h) as usize];
        fill(&mut flat);
        let mut m = SceneMeter::new(vec![mask]);
        let g = GrayFrame { width: w, height: h, data: &flat };
        m.update(g, 0.0).unwrap();
        let s = m.sample(g).unwrap();
        assert!(s.structure.iter().all(|&v| v < 1.0), "the mask's edge counted as structure");
        assert_eq!(s.sharpness, 0.0);
    }

    #[test]
    fn zncc_basics() {
        assert!((zncc(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-9);
        assert!((zncc(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-9);
        assert_eq!(zncc(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    }
}
