//! The two privacy levels as types. A `StaticMaskedFrame` exists only downstream of the static
//! mask stage (its constructor is private to this crate and used only by the capture's analysis
//! sink). A `RedactedFrame` exists only as the output of `redact`, which masks people on top;
//! every egress takes a `RedactedFrame`. Design: `edge/docs/design/privacy-levels.md` (P5, P6).

use vakt_core::geometry::BBox;

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
        StaticMaskedFrame { data, chroma: None, full_range: false, width, height, source_size, media_time_s, index }
    }

    /// Adds the chroma planes (U then V, each `ceil(w/2) × ceil(h/2)`) of an I420 frame, and
    /// whether its values are full range (from the negotiated caps).
    pub(crate) fn with_chroma(mut self, chroma: Vec<u8>, full_range: bool) -> Self {
        debug_assert_eq!(chroma.len(), 2 * chroma_len(self.width, self.height));
        self.chroma = Some(chroma);
        self.full_range = full_range;
        self
    }

    /// The grey (luma) plane, `width × height` bytes, rows packed.
    pub fn data(&self) -> &[u8] {
        &self.data
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
}

/// Bytes of one I420 chroma plane.
pub(crate) fn chroma_len(width: u32, height: u32) -> usize {
    (width as usize).div_ceil(2) * (height as usize).div_ceil(2)
}

/// What is known about people in a frame when it is redacted.
#[derive(Debug, Clone, PartialEq)]
pub enum PeopleEvidence {
    /// No detection result recent enough to trust (none yet, detector stalled or failed):
    /// the whole frame is masked (P6, fail closed).
    Stale,
    /// Boxes (normalised) of every person and unexplained moving region to mask.
    Fresh(Vec<BBox>),
}

/// A frame at the redacted level: static masks plus people masked. The only level an egress
/// accepts.
#[derive(Debug, Clone)]
pub struct RedactedFrame {
    data: Vec<u8>,
    width: u32,
    height: u32,
    media_time_s: f64,
}

impl RedactedFrame {
    pub fn data(&self) -> &[u8] {
        &self.data
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
}

/// Masks people on a static-masked frame. Boxes grow outward to whole pixels.
pub fn redact(frame: StaticMaskedFrame, evidence: &PeopleEvidence) -> RedactedFrame {
    // The redacted level is grey for now: the chroma planes are dropped, so nothing of the
    // masked regions can survive in colour.
    let StaticMaskedFrame { mut data, width, height, media_time_s, .. } = frame;
    match evidence {
        PeopleEvidence::Stale => data.fill(0),
        PeopleEvidence::Fresh(boxes) => {
            for b in boxes {
                let x0 = ((b[0] * width as f64).floor().max(0.0) as u32).min(width);
                let y0 = ((b[1] * height as f64).floor().max(0.0) as u32).min(height);
                // a malformed box (negative size, NaN) masks nothing rather than panicking; the
                // detector's boxes are validated upstream
                let x1 = (((b[0] + b[2]) * width as f64).ceil().max(0.0) as u32).min(width).max(x0);
                let y1 = (((b[1] + b[3]) * height as f64).ceil().max(0.0) as u32).min(height).max(y0);
                for y in y0..y1 {
                    data[(y * width + x0) as usize..(y * width + x1) as usize].fill(0);
                }
            }
        }
    }
    RedactedFrame { data, width, height, media_time_s }
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

    #[test]
    fn stale_evidence_masks_everything() {
        let r = redact(frame(), &PeopleEvidence::Stale);
        assert!(r.data().iter().all(|&v| v == 0));
        assert_eq!(r.media_time_s(), 1.5);
    }

    #[test]
    fn boxes_are_masked_outward_to_whole_pixels() {
        let r = redact(frame(), &PeopleEvidence::Fresh(vec![[0.15, 0.25, 0.2, 0.1]]));
        let masked: Vec<(u32, u32)> =
            (0..100u32).filter(|i| r.data()[*i as usize] == 0).map(|i| (i % 10, i / 10)).collect();
        // x 1.5..3.5 -> pixels 1..4, y 2.5..3.5 -> pixels 2..4
        assert_eq!(masked, vec![(1, 2), (2, 2), (3, 2), (1, 3), (2, 3), (3, 3)]);
    }
}
