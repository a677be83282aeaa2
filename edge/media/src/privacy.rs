//! The two privacy levels as types. A `StaticMaskedFrame` exists only downstream of the static
//! mask stage (its constructor is private to this crate and used only by the capture's sinks). A
//! `RedactedFrame` exists only as the output of `Redactor::redact`, which masks people on top;
//! every egress takes a `RedactedFrame`. Design: `edge/docs/design/privacy-levels.md` (P5, P6)
//! and `edge/docs/design/privacy.md` (D8).

use vakt_core::geometry::{Polygon, Raster};
use vakt_core::redaction::{MaskMode, MaskPlan, render};

/// An analysis frame with the static privacy masks applied: its grey (luma) plane, and, when the
/// capture was asked for colour (object detection), its two chroma planes.
#[derive(Debug, Clone)]
pub struct StaticMaskedFrame {
    data: Vec<u8>,
    /// U then V, each `ceil(width / 2) × ceil(height / 2)`, rows packed (I420 chroma).
    chroma: Option<Vec<u8>>,
    /// The I420 values span 0 to 255 (JPEG, many webcams) rather than video's 16 to 235.
    full_range: bool,
    width: u32,
    height: u32,
    source_size: (u32, u32),
    media_time_s: f64,
    index: u64,
    /// Frames per second from the caps, when they state one.
    frame_rate: Option<(i32, i32)>,
}

impl StaticMaskedFrame {
    pub(crate) fn new(
        data: Vec<u8>,
        width: u32,
        height: u32,
        source_size: (u32, u32),
        media_time_s: f64,
        index: u64,
    ) -> Self {
        StaticMaskedFrame {
            data,
            chroma: None,
            full_range: false,
            width,
            height,
            source_size,
            media_time_s,
            index,
            frame_rate: None,
        }
    }

    /// Adds the chroma planes (U then V, each `ceil(w/2) × ceil(h/2)`) of an I420 frame, and
    /// whether its values are full range (from the negotiated caps).
    pub(crate) fn with_chroma(mut self, chroma: Vec<u8>, full_range: bool) -> Self {
        debug_assert_eq!(chroma.len(), 2 * chroma_len(self.width, self.height));
        self.chroma = Some(chroma);
        self.full_range = full_range;
        self
    }

    /// Records the frame rate the caps state.
    pub(crate) fn with_frame_rate(mut self, rate: Option<(i32, i32)>) -> Self {
        self.frame_rate = rate;
        self
    }

    /// The grey (luma) plane, `width × height` bytes, rows packed.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The I420 chroma planes (U then V), when the frame carries colour.
    pub fn chroma(&self) -> Option<&[u8]> {
        self.chroma.as_deref()
    }

    /// Whether the frame carries colour (the capture was started with `colour = true`).
    pub fn has_colour(&self) -> bool {
        self.chroma.is_some()
    }

    /// The frame in BGR order, 3 bytes per pixel, rows packed, converted from I420 with the
    /// BT.601 matrix, limited or full range as the caps said; `None` without colour. Made only
    /// when asked for: analysis converts only the frames the detector looks at.
    pub fn bgr(&self) -> Option<Vec<u8>> {
        let chroma = self.chroma.as_ref()?;
        // (luma scale, luma offset, V→R, U→G, V→G, U→B)
        let (ys, yo, vr, ug, vg, ub) = if self.full_range {
            (1.0, 0.0, 1.402, 0.344, 0.714, 1.772)
        } else {
            (1.164, 16.0, 1.596, 0.391, 0.813, 2.018)
        };
        let (w, h) = (self.width as usize, self.height as usize);
        let cw = w.div_ceil(2);
        let (u_plane, v_plane) = chroma.split_at(chroma_len(self.width, self.height));
        let mut out = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let c = (y / 2) * cw + x / 2;
                let luma = ys * (self.data[y * w + x] as f32 - yo);
                let u = u_plane[c] as f32 - 128.0;
                let v = v_plane[c] as f32 - 128.0;
                let o = (y * w + x) * 3;
                out[o] = (luma + ub * u).round().clamp(0.0, 255.0) as u8;
                out[o + 1] = (luma - vg * v - ug * u).round().clamp(0.0, 255.0) as u8;
                out[o + 2] = (luma + vr * v).round().clamp(0.0, 255.0) as u8;
            }
        }
        Some(out)
    }
    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    /// Full resolution of the decoded stream this frame was scaled from.
    pub fn source_size(&self) -> (u32, u32) {
        self.source_size
    }
    /// Stream position, seconds; never decreases (loops and reconnects continue it).
    pub fn media_time_s(&self) -> f64 {
        self.media_time_s
    }
    /// 1-based number of the frame within the capture.
    pub fn index(&self) -> u64 {
        self.index
    }
    /// Frames per second as the source's caps state it, if they do.
    pub fn frame_rate(&self) -> Option<(i32, i32)> {
        self.frame_rate
    }
}

/// Bytes of one I420 chroma plane.
pub(crate) fn chroma_len(width: u32, height: u32) -> usize {
    (width as usize).div_ceil(2) * (height as usize).div_ceil(2)
}

/// A frame at the redacted level: static masks plus the dynamic masks of people, in colour
/// (I420) at the resolution it was captured. The only level an egress accepts (P6): its fields
/// are private and `Redactor::redact` is its only constructor.
#[derive(Debug, Clone)]
pub struct RedactedFrame {
    /// Y, then U, then V (each chroma plane `ceil(w/2) × ceil(h/2)`), rows packed.
    data: Vec<u8>,
    /// The dynamic mask that was applied, `width × height`, 255 = masked (static masks not
    /// included: they were filled before).
    mask: Vec<u8>,
    fully_masked: bool,
    width: u32,
    height: u32,
    media_time_s: f64,
    index: u64,
    frame_rate: Option<(i32, i32)>,
}

impl RedactedFrame {
    /// The I420 picture: Y, then U, then V, rows packed.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
    /// The dynamic mask that was applied, `width × height` bytes, 255 = masked.
    pub fn mask(&self) -> &[u8] {
        &self.mask
    }
    /// The whole picture was masked (no trustworthy detector result: fail closed).
    pub fn fully_masked(&self) -> bool {
        self.fully_masked
    }
    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    pub fn media_time_s(&self) -> f64 {
        self.media_time_s
    }
    /// 1-based number of the frame within the capture.
    pub fn index(&self) -> u64 {
        self.index
    }
    /// Frames per second as the source's caps state it (numerator, denominator), if they do.
    pub fn frame_rate(&self) -> Option<(i32, i32)> {
        self.frame_rate
    }
}

/// Black in I420 (limited range): the static masks' fill, and the dynamic one in `Solid` mode.
pub const FILL_Y: u8 = 16;
pub const FILL_C: u8 = 128;

/// Turns static-masked frames into redacted ones (P6, D8): paints a `MaskPlan`, fills or coarsens
/// the masked pixels, and fills the static masks again so that no mode can blend anything into
/// them.
pub struct Redactor {
    mode: MaskMode,
    polygons: Vec<Polygon>,
    /// The static masks rasterised at the last frame size, luma and chroma.
    raster: Option<(u32, u32, Raster, Raster)>,
}

impl Redactor {
    pub fn new(mode: MaskMode, static_masks: Vec<Polygon>) -> Redactor {
        Redactor { mode, polygons: static_masks, raster: None }
    }

    pub fn mode(&self) -> MaskMode {
        self.mode
    }

    /// Masks a static-masked frame by `plan`. A frame without colour is made grey (neutral
    /// chroma).
    pub fn redact(&mut self, frame: StaticMaskedFrame, plan: &MaskPlan) -> RedactedFrame {
        let StaticMaskedFrame { data: luma, chroma, width, height, media_time_s, index, frame_rate, .. } = frame;
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut data = luma;
        match chroma {
            Some(c) => data.extend_from_slice(&c),
            None => data.resize(w * h + 2 * cw * ch, FILL_C),
        }
        let mask = render(plan, width, height);
        let fully_masked = plan.is_full();
        let (y_plane, c_planes) = data.split_at_mut(w * h);
        let (u_plane, v_plane) = c_planes.split_at_mut(cw * ch);
        let cmask = subsample_mask(&mask, w, h);
        let mode = if fully_masked { MaskMode::Solid } else { self.mode };
        match mode {
            MaskMode::Solid => {
                fill_masked(y_plane, &mask, FILL_Y);
                fill_masked(u_plane, &cmask, FILL_C);
                fill_masked(v_plane, &cmask, FILL_C);
            }
            MaskMode::Pixelate | MaskMode::Blur => {
                let block = block_size(height);
                let smooth = mode == MaskMode::Blur;
                coarsen(y_plane, &mask, w, h, block, smooth);
                let cblock = block.div_ceil(2);
                coarsen(u_plane, &cmask, cw, ch, cblock, smooth);
                coarsen(v_plane, &cmask, cw, ch, cblock, smooth);
            }
        }
        // D8: the static masks are filled again after the dynamic ones
        if !self.polygons.is_empty() {
            let stale = !matches!(&self.raster, Some((rw, rh, ..)) if (*rw, *rh) == (width, height));
            if stale {
                let r = Raster::conservative(&self.polygons, width, height);
                let c = r.subsample(2, 2);
                self.raster = Some((width, height, r, c));
            }
            let (_, _, r, c) = self.raster.as_ref().expect("rasterised above");
            r.fill(y_plane, w, 1, &[FILL_Y]);
            c.fill(u_plane, cw, 1, &[FILL_C]);
            c.fill(v_plane, cw, 1, &[FILL_C]);
        }
        RedactedFrame { data, mask, fully_masked, width, height, media_time_s, index, frame_rate }
    }
}

/// Side of the pixelation blocks for a picture `height` pixels high: about a thirtieth of the
/// height and never under 8 pixels, so a face 25 pixels high spans two or three blocks each way
/// at 480 lines (D8).
pub fn block_size(height: u32) -> usize {
    ((height as f64 / 30.0).round() as usize).max(8)
}

/// The chroma mask: a chroma sample is masked when any of its 2 × 2 luma pixels is.
fn subsample_mask(mask: &[u8], w: usize, h: usize) -> Vec<u8> {
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut c = vec![0u8; cw * ch];
    for y in 0..h {
        for x in 0..w {
            if mask[y * w + x] != 0 {
                c[(y / 2) * cw + x / 2] = 255;
            }
        }
    }
    c
}

fn fill_masked(plane: &mut [u8], mask: &[u8], value: u8) {
    for (p, m) in plane.iter_mut().zip(mask) {
        if *m != 0 {
            *p = value;
        }
    }
}

/// Replaces every masked pixel by its block's mean on a fixed grid of `block`-pixel squares
/// (pixelate), or by the means of the four nearest blocks interpolated at its place (blur). Either
/// way a masked pixel depends only on block means: the detail inside a block is gone.
fn coarsen(plane: &mut [u8], mask: &[u8], w: usize, h: usize, block: usize, smooth: bool) {
    if !mask.iter().any(|&m| m != 0) {
        return;
    }
    let (bw, bh) = (w.div_ceil(block), h.div_ceil(block));
    let mut sums = vec![0u64; bw * bh];
    let mut counts = vec![0u64; bw * bh];
    for y in 0..h {
        let row = &plane[y * w..(y + 1) * w];
        let b = (y / block) * bw;
        for (x, v) in row.iter().enumerate() {
            sums[b + x / block] += *v as u64;
            counts[b + x / block] += 1;
        }
    }
    let means: Vec<f32> = sums.iter().zip(&counts).map(|(s, c)| *s as f32 / (*c).max(1) as f32).collect();
    for y in 0..h {
        for x in 0..w {
            if mask[y * w + x] == 0 {
                continue;
            }
            let v = if smooth {
                // block centres at (i + 0.5) * block; clamp at the borders
                let fx = ((x as f32 + 0.5) / block as f32 - 0.5).clamp(0.0, (bw - 1) as f32);
                let fy = ((y as f32 + 0.5) / block as f32 - 0.5).clamp(0.0, (bh - 1) as f32);
                let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
                let (x1, y1) = ((x0 + 1).min(bw - 1), (y0 + 1).min(bh - 1));
                let (ax, ay) = (fx - x0 as f32, fy - y0 as f32);
                let top = means[y0 * bw + x0] * (1.0 - ax) + means[y0 * bw + x1] * ax;
                let bottom = means[y1 * bw + x0] * (1.0 - ax) + means[y1 * bw + x1] * ax;
                top * (1.0 - ay) + bottom * ay
            } else {
                means[(y / block) * bw + x / block]
            };
            plane[y * w + x] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> StaticMaskedFrame {
        StaticMaskedFrame::new(vec![200; 100], 10, 10, (10, 10), 1.5, 1)
    }

    #[test]
    fn i420_converts_to_bgr() {
        // 3 x 1 pixels: chroma planes of 2 x 1; black, white, and a saturated red pair
        let f =
            StaticMaskedFrame::new(vec![16, 235, 81], 3, 1, (3, 1), 0.0, 1).with_chroma(vec![128, 90, 128, 240], false);
        let bgr = f.bgr().unwrap();
        assert_eq!(&bgr[0..3], &[0, 0, 0]);
        assert_eq!(&bgr[3..6], &[255, 255, 255]);
        // Y 81, U 90, V 240: BT.601 red
        assert!(bgr[8] > 240 && bgr[6] < 10 && bgr[7] < 10, "{:?}", &bgr[6..9]);
        assert!(frame().bgr().is_none());
        // full range (JPEG): 0 and 255 are black and white, and Y 76, U 85, V 255 is red
        let f =
            StaticMaskedFrame::new(vec![0, 255, 76], 3, 1, (3, 1), 0.0, 1).with_chroma(vec![128, 85, 128, 255], true);
        let bgr = f.bgr().unwrap();
        assert_eq!(&bgr[0..6], &[0, 0, 0, 255, 255, 255]);
        assert!(bgr[8] > 245 && bgr[6] < 10 && bgr[7] < 10, "{:?}", &bgr[6..9]);
    }

    fn colour_frame(w: u32, h: u32) -> StaticMaskedFrame {
        let luma: Vec<u8> = (0..w * h).map(|i| (40 + (i * 7) % 180) as u8).collect();
        let c = chroma_len(w, h);
        let chroma: Vec<u8> = (0..2 * c).map(|i| (60 + (i * 5) % 120) as u8).collect();
        StaticMaskedFrame::new(luma, w, h, (w, h), 1.5, 3).with_chroma(chroma, false)
    }

    fn regions(people: Vec<[f32; 4]>) -> MaskPlan {
        MaskPlan::Regions { motion: vec![], keep: vec![], people }
    }

    #[test]
    fn a_stale_plan_masks_everything_in_every_mode() {
        use vakt_core::redaction::FullReason;
        for mode in MaskMode::ALL {
            let r = Redactor::new(mode, vec![]).redact(colour_frame(10, 10), &MaskPlan::Full(FullReason::Stale));
            let (y, c) = r.data().split_at(100);
            assert!(y.iter().all(|&v| v == FILL_Y) && c.iter().all(|&v| v == FILL_C), "{mode:?}");
            assert!(r.fully_masked() && r.mask().iter().all(|&m| m == 255));
            assert_eq!((r.media_time_s(), r.index()), (1.5, 3));
        }
    }

    #[test]
    fn solid_fills_the_box_outward_to_whole_pixels_and_its_chroma() {
        let f = colour_frame(10, 10);
        let before = f.data().to_vec();
        let r = Redactor::new(MaskMode::Solid, vec![]).redact(f, &regions(vec![[0.15, 0.25, 0.2, 0.1]]));
        let masked: Vec<(usize, usize)> = (0..100).filter(|i| r.mask()[*i] == 255).map(|i| (i % 10, i / 10)).collect();
        // x 1.5..3.5 -> pixels 1..4, y 2.5..3.5 -> pixels 2..4
        assert_eq!(masked, vec![(1, 2), (2, 2), (3, 2), (1, 3), (2, 3), (3, 3)]);
        for (i, (got, was)) in r.data()[..100].iter().zip(&before).enumerate() {
            let want = if r.mask()[i] == 255 { FILL_Y } else { *was };
            assert_eq!(*got, want, "pixel {i}");
        }
        // chroma samples (5 x 5) covering luma x 0..4, y 2..4: columns 0..2, row 1
        let u = &r.data()[100..125];
        for (i, v) in u.iter().enumerate() {
            assert_eq!(*v == FILL_C, (i / 5 == 1) && (i % 5 < 2), "chroma sample {i}");
        }
    }

    #[test]
    fn pixelate_and_blur_leave_only_block_means() {
        // 32 x 32, blocks of 8; mask the left half. Two frames that differ only inside one block
        // must come out identical when that block's mean is the same.
        let (w, h) = (32u32, 32u32);
        let plan = regions(vec![[0.0, 0.0, 0.5, 1.0]]);
        let a = colour_frame(w, h);
        let mut luma = a.data().to_vec();
        // swap two pixels inside the block at (0, 0): same mean, different detail
        luma.swap(0, 1 + 32);
        let b = StaticMaskedFrame::new(luma, w, h, (w, h), 0.0, 1).with_chroma(a.chroma.clone().unwrap(), false);
        for mode in [MaskMode::Pixelate, MaskMode::Blur] {
            let ra = Redactor::new(mode, vec![]).redact(a.clone(), &plan);
            let rb = Redactor::new(mode, vec![]).redact(b.clone(), &plan);
            assert_eq!(ra.data(), rb.data(), "{mode:?}: detail inside a block survived");
            // the right half is untouched
            for y in 0..32usize {
                for x in 16..32usize {
                    assert_eq!(ra.data()[y * 32 + x], a.data()[y * 32 + x]);
                }
            }
            // the left half changed
            assert_ne!(&ra.data()[0..16], &a.data()[0..16], "{mode:?}");
        }
        assert_eq!(block_size(480), 16);
        assert_eq!(block_size(120), 8);
        assert_eq!(block_size(1080), 36);
    }

    #[test]
    fn static_masks_are_filled_again_after_any_mode() {
        use vakt_core::geometry::Polygon;
        let poly = Polygon::new(vec![[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]).unwrap();
        let raster = Raster::conservative(std::slice::from_ref(&poly), 32, 32);
        for mode in MaskMode::ALL {
            // a person box over the static mask: blurring would pull their pixels into it
            let r = Redactor::new(mode, vec![poly.clone()])
                .redact(colour_frame(32, 32), &regions(vec![[0.25, 0.25, 0.5, 0.5]]));
            for y in 0..32u32 {
                for x in 0..32u32 {
                    if raster.contains(x, y) {
                        assert_eq!(r.data()[(y * 32 + x) as usize], FILL_Y, "{mode:?} at {x},{y}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_grey_frame_is_redacted_with_neutral_chroma() {
        let r = Redactor::new(MaskMode::Solid, vec![]).redact(frame(), &regions(vec![]));
        assert_eq!(r.data().len(), 100 + 50);
        assert!(r.data()[100..].iter().all(|&v| v == FILL_C));
        assert!(r.data()[..100].iter().all(|&v| v == 200));
    }
}
