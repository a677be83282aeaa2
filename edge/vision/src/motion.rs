//! Motion detection on downscaled grey frames: an adaptive per-pixel background (mean and
//! variance) with illumination compensation, a global-change rule, selective update and blob
//! clean-up. Design: `edge/docs/design/motion.md` (steps M1–M8 are cited below).

use opencv::core::{self, Mat, Point, Scalar, Size, Vector};
use opencv::imgproc;
use opencv::prelude::*;

use vakt_core::config::MotionConfig;
use vakt_core::geometry::{Polygon, Raster};

/// A grey frame, `width * height` bytes, rows tightly packed.
#[derive(Debug, Clone, Copy)]
pub struct GrayFrame<'a> {
    pub width: u32,
    pub height: u32,
    pub data: &'a [u8],
}

/// Scales a grey frame to `width` (the height keeps the aspect ratio, rounded) by area averaging:
/// motion runs at its own width when analysis frames come wider for the detector.
pub fn resize_gray(frame: GrayFrame<'_>, width: u32) -> Result<(Vec<u8>, u32, u32), VisionError> {
    let (w, h) = (frame.width, frame.height);
    if w == 0 || h == 0 || frame.data.len() != (w * h) as usize {
        return Err(VisionError::BadFrame { width: w, height: h, got: frame.data.len() });
    }
    let height = ((h as u64 * width as u64 + w as u64 / 2) / w as u64).max(1) as u32;
    if (width, height) == (w, h) {
        return Ok((frame.data.to_vec(), w, h));
    }
    let src = Mat::new_rows_cols_with_data(h as i32, w as i32, frame.data)?;
    let mut dst = Mat::default();
    imgproc::resize(&src, &mut dst, Size::new(width as i32, height as i32), 0.0, 0.0, imgproc::INTER_AREA)?;
    Ok((dst.data_bytes()?.to_vec(), width, height))
}

/// A moving region, in working-resolution pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub area: u32,
}

/// One frame's motion.
#[derive(Debug, Clone, Default)]
pub struct MotionResult {
    pub width: u32,
    pub height: u32,
    /// `width * height` bytes, 255 = moving.
    pub mask: Vec<u8>,
    pub blobs: Vec<Blob>,
    /// Most of the frame changed at once (lights, clouds, IR switch): the model was re-learned
    /// and this frame reports no motion (M5).
    pub global_change: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("OpenCV: {0}")]
    OpenCv(#[from] opencv::Error),
    #[error("frame is {got} bytes, expected {width}x{height} = {}", width * height)]
    BadFrame { width: u32, height: u32, got: usize },
    #[error("colour frame is {got} bytes, expected {width}x{height}x3 = {}", width * height * 3)]
    BadColourFrame { width: u32, height: u32, got: usize },
    #[error("{0}")]
    Model(String),
}

/// Anything that turns grey frames into motion.
pub trait MotionDetector: Send {
    /// `t` is the frame's media time in seconds; the model adapts in time, not in frames.
    fn detect(&mut self, frame: GrayFrame<'_>, t: f64) -> Result<MotionResult, VisionError>;
}

/// Tunables, usually from `[motion]` in the config.
#[derive(Debug, Clone)]
pub struct MotionParams {
    pub threshold: f64,
    pub sigma_k: f64,
    pub learn_time_s: f64,
    pub min_area: f64,
    pub global_change: f64,
    /// Areas where motion is ignored.
    pub ignore: Vec<Polygon>,
}

impl MotionParams {
    pub fn from_config(c: &MotionConfig) -> Self {
        MotionParams {
            threshold: c.threshold,
            sigma_k: c.sigma_k,
            learn_time_s: c.learn_time.as_secs_f64(),
            min_area: c.min_area,
            global_change: c.global_change,
            ignore: c.masks.iter().map(|m| m.polygon.clone()).collect(),
        }
    }
}

/// The background-model detector shipped by default.
pub struct BackgroundMotion {
    p: MotionParams,
    size: Option<(u32, u32)>,
    frames: u64,
    last_t: f64,
    bg: Mat,
    var: Mat,
    cur: Mat,
    diff: Mat,
    diff2: Mat,
    thr: Mat,
    fg: Mat,
    bg_mask: Mat,
    tmp: Mat,
    ignore: Mat,
    /// Pixels outside every motion mask (the denominator of the global-change share).
    analysed: f64,
    prev_bg_mask: Mat,
    open_k: Mat,
    close_k: Mat,
}

// SAFETY-free: opencv::Mat is Send; the detector owns all its buffers.
impl BackgroundMotion {
    pub fn new(p: MotionParams) -> Result<Self, VisionError> {
        let open_k = imgproc::get_structuring_element(imgproc::MORPH_ELLIPSE, Size::new(3, 3), Point::new(-1, -1))?;
        let close_k = imgproc::get_structuring_element(imgproc::MORPH_ELLIPSE, Size::new(7, 7), Point::new(-1, -1))?;
        Ok(BackgroundMotion {
            p,
            size: None,
            frames: 0,
            last_t: 0.0,
            bg: Mat::default(),
            var: Mat::default(),
            cur: Mat::default(),
            diff: Mat::default(),
            diff2: Mat::default(),
            thr: Mat::default(),
            fg: Mat::default(),
            bg_mask: Mat::default(),
            tmp: Mat::default(),
            ignore: Mat::default(),
            analysed: 0.0,
            prev_bg_mask: Mat::default(),
            open_k,
            close_k,
        })
    }

    fn reset(&mut self, w: u32, h: u32) -> Result<(), VisionError> {
        self.size = Some((w, h));
        self.frames = 0;
        // M1: motion masks are rasterised once per resolution; 255 = analyse, 0 = ignore.
        let mut ignore = Raster::conservative(&self.p.ignore, w, h).to_mask();
        for v in ignore.iter_mut() {
            *v = 255 - *v;
        }
        self.analysed = ignore.iter().filter(|&&v| v != 0).count() as f64;
        self.ignore = Mat::from_slice(&ignore)?.reshape(1, h as i32)?.try_clone()?;
        Ok(())
    }
}

impl MotionDetector for BackgroundMotion {
    fn detect(&mut self, frame: GrayFrame<'_>, t: f64) -> Result<MotionResult, VisionError> {
        let (w, h) = (frame.width, frame.height);
        if frame.data.len() != (w * h) as usize {
            return Err(VisionError::BadFrame { width: w, height: h, got: frame.data.len() });
        }
        if self.size != Some((w, h)) {
            self.reset(w, h)?;
        }
        let src = Mat::from_slice(frame.data)?;
        let src = src.reshape(1, h as i32)?;
        // M2: smooth sensor noise, work in floating point.
        imgproc::gaussian_blur(&src, &mut self.tmp, Size::new(5, 5), 0.0, 0.0, core::BORDER_REPLICATE)?;
        self.tmp.convert_to(&mut self.cur, core::CV_32F, 1.0, 0.0)?;

        let mut result = MotionResult { width: w, height: h, mask: vec![0; (w * h) as usize], ..Default::default() };
        let dt = if self.frames == 0 { 0.0 } else { (t - self.last_t).clamp(0.0, 5.0) };
        self.last_t = t;
        if self.frames == 0 {
            self.cur.copy_to(&mut self.bg)?;
            let init_var = (self.p.threshold / self.p.sigma_k).powi(2);
            self.var = Mat::new_rows_cols_with_default(h as i32, w as i32, core::CV_32F, Scalar::all(init_var))?;
            self.prev_bg_mask = Mat::new_rows_cols_with_default(h as i32, w as i32, core::CV_8U, Scalar::all(255.0))?;
            self.frames = 1;
            return Ok(result);
        }
        self.frames += 1;

        // M3: illumination compensation: scale the frame so that its mean over the pixels that
        // were background in the previous frame matches the model's.
        let m_cur = core::mean(&self.cur, &self.prev_bg_mask)?[0];
        let m_bg = core::mean(&self.bg, &self.prev_bg_mask)?[0];
        if m_cur > 1.0 && m_bg > 1.0 {
            let gain = m_bg / m_cur;
            if (gain - 1.0).abs() > 0.01 {
                self.cur.convert_to(&mut self.tmp, core::CV_32F, gain, 0.0)?;
                std::mem::swap(&mut self.cur, &mut self.tmp);
            }
        }

        // M4: foreground where (I - mu)^2 > k^2 var + T^2.
        core::absdiff(&self.cur, &self.bg, &mut self.diff)?;
        core::multiply(&self.diff, &self.diff, &mut self.diff2, 1.0, -1)?;
        let k2 = self.p.sigma_k * self.p.sigma_k;
        let t2 = self.p.threshold * self.p.threshold;
        self.var.convert_to(&mut self.thr, core::CV_32F, k2, t2)?;
        core::compare(&self.diff2, &self.thr, &mut self.fg, core::CMP_GT)?;
        core::bitwise_and(&self.fg, &self.ignore, &mut self.tmp, &core::no_array())?;
        std::mem::swap(&mut self.fg, &mut self.tmp);

        // M6: learning rates from elapsed media time; bootstrap faster while the model is young.
        let a_bg = (1.0 - (-dt / self.p.learn_time_s).exp()).max(1.0 / (self.frames as f64 + 1.0)).min(1.0);
        let a_fg = a_bg * 0.05;

        let raw_fg = core::count_non_zero(&self.fg)? as f64 / self.analysed.max(1.0);
        if raw_fg > self.p.global_change {
            // M5: a global change: re-learn the mean from this frame, report nothing.
            self.cur.copy_to(&mut self.bg)?;
            result.global_change = true;
            return Ok(result);
        }

        // M6: selective update: background pixels adapt at a_bg, foreground ones slowly at a_fg
        // (so a parked car becomes background over ~20 learn times, a walker does not).
        core::bitwise_not(&self.fg, &mut self.bg_mask, &core::no_array())?;
        imgproc::accumulate_weighted(&self.cur, &mut self.bg, a_bg, &self.bg_mask)?;
        imgproc::accumulate_weighted(&self.cur, &mut self.bg, a_fg, &self.fg)?;
        imgproc::accumulate_weighted(&self.diff2, &mut self.var, a_bg, &self.bg_mask)?;
        self.bg_mask.copy_to(&mut self.prev_bg_mask)?;

        // M7: clean up: open removes speckle, close joins the parts of one object.
        imgproc::morphology_ex(
            &self.fg,
            &mut self.tmp,
            imgproc::MORPH_OPEN,
            &self.open_k,
            Point::new(-1, -1),
            1,
            core::BORDER_CONSTANT,
            imgproc::morphology_default_border_value()?,
        )?;
        imgproc::morphology_ex(
            &self.tmp,
            &mut self.fg,
            imgproc::MORPH_CLOSE,
            &self.close_k,
            Point::new(-1, -1),
            1,
            core::BORDER_CONSTANT,
            imgproc::morphology_default_border_value()?,
        )?;

        // M8: blobs: outer contours, filled (holes inside an object count as the object), small
        // ones dropped.
        let mut contours: Vector<Vector<Point>> = Vector::new();
        imgproc::find_contours(
            &self.fg,
            &mut contours,
            imgproc::RETR_EXTERNAL,
            imgproc::CHAIN_APPROX_SIMPLE,
            Point::new(0, 0),
        )?;
        let min_px = (self.p.min_area * (w * h) as f64).max(1.0);
        let mut out = Mat::new_rows_cols_with_default(h as i32, w as i32, core::CV_8U, Scalar::all(0.0))?;
        let mut kept: Vector<Vector<Point>> = Vector::new();
        for c in contours.iter() {
            // Pixels covered by the filled contour ≈ area + perimeter / 2 + 1 (Pick), so thin
            // blobs are measured in the same unit as `min_px`.
            let area = imgproc::contour_area(&c, false)? + imgproc::arc_length(&c, true)? / 2.0 + 1.0;
            let r = imgproc::bounding_rect(&c)?;
            if area < min_px {
                continue;
            }
            result.blobs.push(Blob {
                x: r.x as u32,
                y: r.y as u32,
                w: r.width as u32,
                h: r.height as u32,
                area: area as u32,
            });
            kept.push(c);
        }
        if !kept.is_empty() {
            imgproc::draw_contours(
                &mut out,
                &kept,
                -1,
                Scalar::all(255.0),
                imgproc::FILLED,
                imgproc::LINE_8,
                &core::no_array(),
                i32::MAX,
                Point::new(0, 0),
            )?;
            core::bitwise_and(&out, &self.ignore, &mut self.tmp, &core::no_array())?;
            result.mask.copy_from_slice(self.tmp.data_bytes()?);
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> MotionParams {
        MotionParams {
            threshold: 12.0,
            sigma_k: 3.0,
            learn_time_s: 2.0,
            min_area: 0.001,
            global_change: 0.6,
            ignore: vec![],
        }
    }

    fn frame_with_square(w: u32, h: u32, bg: u8, x0: u32, value: u8) -> Vec<u8> {
        let mut f = vec![bg; (w * h) as usize];
        for y in 20..40 {
            for x in x0..x0 + 20 {
                f[(y * w + x) as usize] = value;
            }
        }
        f
    }

    #[test]
    fn a_moving_square_is_found_and_a_static_scene_is_not() {
        let (w, h) = (160, 120);
        let mut d = BackgroundMotion::new(params()).unwrap();
        let still = vec![100u8; (w * h) as usize];
        for i in 0..30 {
            let r = d.detect(GrayFrame { width: w, height: h, data: &still }, i as f64 / 10.0).unwrap();
            assert!(r.blobs.is_empty(), "static frame {i} produced {:?}", r.blobs);
        }
        let f = frame_with_square(w, h, 100, 60, 200);
        let r = d.detect(GrayFrame { width: w, height: h, data: &f }, 3.0).unwrap();
        assert_eq!(r.blobs.len(), 1, "{:?}", r.blobs);
        let b = r.blobs[0];
        assert!(b.x.abs_diff(60) <= 3 && b.y.abs_diff(20) <= 3 && b.w.abs_diff(20) <= 6, "{b:?}");
        assert_eq!(r.mask[(30 * w + 70) as usize], 255);
        assert_eq!(r.mask[(100 * w + 10) as usize], 0);
    }

    #[test]
    fn a_global_light_change_is_not_motion() {
        let (w, h) = (160, 120);
        let mut d = BackgroundMotion::new(params()).unwrap();
        let mut f: Vec<u8> = (0..w * h).map(|i| (60 + (i % 97)) as u8).collect();
        for i in 0..20 {
            d.detect(GrayFrame { width: w, height: h, data: &f }, i as f64 / 10.0).unwrap();
        }
        // lights switch on: everything 40 % brighter
        for v in f.iter_mut() {
            *v = (*v as f64 * 1.4).min(255.0) as u8;
        }
        for i in 20..25 {
            let r = d.detect(GrayFrame { width: w, height: h, data: &f }, i as f64 / 10.0).unwrap();
            assert!(r.blobs.is_empty(), "frame {i}: {:?}", r.blobs);
        }
    }

    #[test]
    fn ignored_areas_produce_nothing() {
        let (w, h) = (160, 120);
        let mut p = params();
        p.ignore = vec![Polygon::new(vec![[0.3, 0.1], [0.6, 0.1], [0.6, 0.4], [0.3, 0.4]]).unwrap()];
        let mut d = BackgroundMotion::new(p).unwrap();
        let still = vec![100u8; (w * h) as usize];
        for i in 0..20 {
            d.detect(GrayFrame { width: w, height: h, data: &still }, i as f64 / 10.0).unwrap();
        }
        let f = frame_with_square(w, h, 100, 60, 200); // x 60..80, y 20..40 lies inside 48..96 x 12..48
        let r = d.detect(GrayFrame { width: w, height: h, data: &f }, 2.0).unwrap();
        assert!(r.blobs.is_empty() && r.mask.iter().all(|&v| v == 0), "{:?}", r.blobs);
    }

    #[test]
    fn wrong_frame_size_is_an_error() {
        let mut d = BackgroundMotion::new(params()).unwrap();
        let e = d.detect(GrayFrame { width: 10, height: 10, data: &[0; 5] }, 0.0).unwrap_err();
        assert!(e.to_string().contains("expected 10x10"));
    }

    #[test]
    fn grey_frames_scale_down_by_area_average() {
        // 4 x 2 -> 2 x 1: each output pixel is the mean of a 2 x 2 block
        let data = [0u8, 100, 200, 200, 100, 200, 200, 200];
        let (out, w, h) = resize_gray(GrayFrame { width: 4, height: 2, data: &data }, 2).unwrap();
        assert_eq!((w, h, out), (2, 1, vec![100, 200]));
        // the same width is a copy; 416 x 234 -> 320 x 180 keeps the aspect ratio
        let same = resize_gray(GrayFrame { width: 4, height: 2, data: &data }, 4).unwrap();
        assert_eq!(same.0, data.to_vec());
        let big = vec![7u8; 416 * 234];
        let (_, w, h) = resize_gray(GrayFrame { width: 416, height: 234, data: &big }, 320).unwrap();
        assert_eq!((w, h), (320, 180));
        assert!(resize_gray(GrayFrame { width: 4, height: 2, data: &data[..7] }, 2).is_err());
    }
}
