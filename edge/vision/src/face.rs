//! Face detection, the complement to person boxes for masking when the camera is close: at
//! public-camera distance faces are 8–25 px and a face detector misses most of them, so person
//! boxes stay the primary mask (edge/docs/design/privacy.md, D9). The model is UltraFace (RFB,
//! 320×240 or 640×480 input) through tract-onnx: its priors are decoded inside the network, so
//! only thresholding and NMS are left, done by `vakt_core::detect`.

use std::path::Path;

use opencv::core::{self as cvcore, Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;
use tract_onnx::prelude::*;

use vakt_core::detect::{BoxPx, Detection, ObjectClass, nms};
use vakt_core::models::Manifest;

use crate::VisionError;
use crate::detector::{BgrFrame, verified_weights_file};

/// The two UltraFace inputs the manifest ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceInput {
    /// 320×240, `version-RFB-320.onnx`: faces from about 20 px in a 640-wide frame.
    Small,
    /// 640×480, `version-RFB-640.onnx`: faces from about 10 px, four times the work.
    Large,
}

impl FaceInput {
    pub fn size(self) -> (u32, u32) {
        match self {
            FaceInput::Small => (320, 240),
            FaceInput::Large => (640, 480),
        }
    }

    fn file(self) -> &'static str {
        match self {
            FaceInput::Small => "version-RFB-320.onnx",
            FaceInput::Large => "version-RFB-640.onnx",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaceParams {
    pub input: FaceInput,
    /// Lowest face score kept. Upstream's sample uses 0.7; masking prefers a lower floor (a
    /// false face costs a small rectangle, a missed one a visible face).
    pub min_score: f32,
    pub nms_iou: f32,
}

impl Default for FaceParams {
    fn default() -> Self {
        FaceParams { input: FaceInput::Small, min_score: 0.5, nms_iou: 0.3 }
    }
}

type Plan = std::sync::Arc<TypedRunnableModel>;

/// UltraFace through tract-onnx, one inference thread.
pub struct UltraFace {
    plan: Plan,
    params: FaceParams,
    resized: Mat,
    model: String,
}

impl UltraFace {
    /// Loads the weights for `params.input` after verifying every file of the manifest.
    pub fn load(dir: &Path, manifest: &Manifest, params: FaceParams) -> Result<UltraFace, VisionError> {
        let (path, bytes) = verified_weights_file(dir, manifest, params.input.file())?;
        let (w, h) = params.input.size();
        let plan = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(bytes))
            .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, h as usize, w as usize]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| VisionError::Model(format!("model {} ({}): {e}", manifest.name, path.display())))?;
        Ok(UltraFace { plan, params, resized: Mat::default(), model: format!("{}-{w}", manifest.name) })
    }

    /// Faces in frame pixels, after NMS, each with score ≥ `min_score`. The class is `Person`:
    /// a face is masked as a person is.
    pub fn detect(&mut self, frame: &BgrFrame<'_>) -> Result<Vec<Detection>, VisionError> {
        let (fw, fh) = (frame.width, frame.height);
        if fw == 0 || fh == 0 || frame.data.len() != (fw * fh * 3) as usize {
            return Err(VisionError::BadColourFrame { width: fw, height: fh, got: frame.data.len() });
        }
        let (iw, ih) = self.params.input.size();
        // SAFETY: `frame.data` holds fh rows of 3·fw bytes (checked above) and outlives `src`,
        // which is only read within this function.
        let src = unsafe {
            Mat::new_rows_cols_with_data_unsafe_def(
                fh as i32,
                fw as i32,
                cvcore::CV_8UC3,
                frame.data.as_ptr() as *mut std::ffi::c_void,
            )?
        };
        // stretched, not letterboxed: the boxes come out in shares of the input, so they map
        // straight back to the frame
        imgproc::resize(&src, &mut self.resized, Size::new(iw as i32, ih as i32), 0.0, 0.0, imgproc::INTER_LINEAR)?;
        let hwc = self.resized.data_bytes()?;
        let (iw, ih) = (iw as usize, ih as usize);
        // BGR HWC u8 → RGB NCHW, (x − 127) / 128
        let input = tract_ndarray::Array4::from_shape_fn((1, 3, ih, iw), |(_, c, y, x)| {
            (hwc[(y * iw + x) * 3 + (2 - c)] as f32 - 127.0) / 128.0
        });
        let out = self
            .plan
            .run(tvec!(Tensor::from(input).into()))
            .map_err(|e| VisionError::Model(format!("face inference: {e}")))?;
        if out.len() != 2 {
            return Err(VisionError::Model(format!(
                "face model gave {} outputs, expected scores and boxes",
                out.len()
            )));
        }
        let scores = out[0].to_plain_array_view::<f32>().map_err(|e| VisionError::Model(format!("scores: {e}")))?;
        let boxes = out[1].to_plain_array_view::<f32>().map_err(|e| VisionError::Model(format!("boxes: {e}")))?;
        let (scores, boxes) = match (scores.as_slice(), boxes.as_slice()) {
            (Some(s), Some(b)) => (s, b),
            _ => return Err(VisionError::Model("face model outputs are not contiguous".into())),
        };
        let dets = decode_ultraface(scores, boxes, fw as f32, fh as f32, self.params.min_score)?;
        Ok(nms(dets, self.params.nms_iou))
    }

    /// Name for logs, e.g. "ultraface-320@tract".
    pub fn name(&self) -> String {
        format!("{}@tract", self.model)
    }
}

/// UltraFace's outputs to detections in a `w` × `h` frame: `scores` holds (background, face)
/// pairs, `boxes` normalised (x1, y1, x2, y2), one per prior.
pub fn decode_ultraface(
    scores: &[f32],
    boxes: &[f32],
    w: f32,
    h: f32,
    min_score: f32,
) -> Result<Vec<Detection>, VisionError> {
    if !scores.len().is_multiple_of(2) || boxes.len() != scores.len() * 2 {
        return Err(VisionError::Model(format!(
            "face model outputs do not match: {} scores, {} box values (want 2 and 4 per prior)",
            scores.len(),
            boxes.len()
        )));
    }
    Ok(scores
        .chunks_exact(2)
        .zip(boxes.chunks_exact(4))
        .filter(|(s, _)| s[1] >= min_score)
        .map(|(s, b)| {
            let (x0, y0) = (b[0].clamp(0.0, 1.0) * w, b[1].clamp(0.0, 1.0) * h);
            let (x1, y1) = (b[2].clamp(0.0, 1.0) * w, b[3].clamp(0.0, 1.0) * h);
            Detection { class: ObjectClass::Person, score: s[1], bbox: BoxPx::new(x0, y0, x1 - x0, y1 - y0) }
        })
        .filter(|d| d.bbox.w > 0.0 && d.bbox.h > 0.0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_normalised_corners_into_frame_pixels() {
        // three priors: a face, background, a face below the floor
        let scores = [0.1, 0.9, 0.8, 0.2, 0.6, 0.4];
        let boxes = [0.25, 0.5, 0.5, 0.75, 0.0, 0.0, 1.0, 1.0, 0.1, 0.1, 0.2, 0.2];
        let d = decode_ultraface(&scores, &boxes, 640.0, 480.0, 0.5).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].bbox, BoxPx::new(160.0, 240.0, 160.0, 120.0));
        assert_eq!((d[0].class, d[0].score), (ObjectClass::Person, 0.9));
        // corners outside the frame are clipped; a mismatch of lengths is an error
        let d = decode_ultraface(&[0.0, 1.0], &[-0.1, -0.1, 0.1, 1.2], 100.0, 100.0, 0.5).unwrap();
        assert_eq!(d[0].bbox, BoxPx::new(0.0, 0.0, 10.0, 100.0));
        assert!(decode_ultraface(&[0.0, 1.0], &[0.0; 3], 1.0, 1.0, 0.5).is_err());
    }
}
