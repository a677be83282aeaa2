//! The two privacy levels as types. A `StaticMaskedFrame` exists only downstream of the static
//! mask stage (its constructor is private to this crate and used only by the capture's analysis
//! sink). A `RedactedFrame` exists only as the output of `redact`, which masks people on top;
//! every egress takes a `RedactedFrame`. Design: `edge/docs/design/privacy-levels.md` (P5, P6).

use vakt_core::geometry::BBox;

/// A grey analysis frame with the static privacy masks applied.
#[derive(Debug, Clone)]
pub struct StaticMaskedFrame {
    data: Vec<u8>,
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
        StaticMaskedFrame { data, width, height, source_size, media_time_s, index }
    }

    pub fn data(&self) -> &[u8] {
        &self.data
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
