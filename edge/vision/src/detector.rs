//! Object detection behind the `Detector` trait, so a board can bring its own accelerator
//! (Hailo, RKNN, Jetson) later. The default runs YOLOX-nano 416 on the CPU with tract-onnx (pure
//! Rust; chosen by measurement over OpenCV DNN 4.6, which took twice as long per frame on one
//! core: benches/RESULTS.md). Letterboxing uses OpenCV; decoding and NMS are the pure functions
//! of `vakt_core::detect`.

use std::path::{Path, PathBuf};

use opencv::core::{self as cvcore, Mat, Rect, Scalar, Size};
use opencv::imgproc;
use opencv::prelude::*;
use tract_onnx::prelude::*;

use vakt_core::detect::{Detection, Letterbox, decode_yolox, nms};
use vakt_core::models::{self, FileOutcome, Manifest};

use crate::VisionError;

/// A frame in BGR order, 3 bytes per pixel, rows packed.
#[derive(Debug, Clone, Copy)]
pub struct BgrFrame<'a> {
    pub width: u32,
    pub height: u32,
    pub data: &'a [u8],
}

/// Finds people and vehicles in a frame. `detect` is called from one thread.
pub trait Detector: Send {
    /// Detections in frame pixels, after NMS, with score ≥ the detector's floor.
    fn detect(&mut self, frame: &BgrFrame<'_>) -> Result<Vec<Detection>, VisionError>;
    /// Name for logs and health, e.g. "yolox_nano@tract".
    fn name(&self) -> String;
}

#[derive(Debug, Clone, PartialEq)]
pub struct YoloxParams {
    /// Network input side (416 for YOLOX-nano).
    pub input: u32,
    /// Lowest score kept (the tracker's low threshold: weak boxes extend tracks).
    pub min_score: f32,
    /// NMS IoU threshold.
    pub nms_iou: f32,
}

impl Default for YoloxParams {
    fn default() -> Self {
        YoloxParams { input: 416, min_score: 0.2, nms_iou: 0.45 }
    }
}

/// Checks every file of `manifest` under `dir` and returns the (first) weights' bytes, read once
/// and checked against the manifest's sha256 (so the bytes loaded are the bytes verified); refuses
/// a model whose checksum does not match, naming the file and both checksums.
pub fn verified_weights(dir: &Path, manifest: &Manifest) -> Result<(PathBuf, Vec<u8>), VisionError> {
    let w = manifest.files.iter().find(|f| f.role == "weights").expect("manifests have weights (parse checks)");
    verified_weights_file(dir, manifest, &w.path)
}

/// As [`verified_weights`], for the weights file `file` of a manifest that ships several.
pub fn verified_weights_file(dir: &Path, manifest: &Manifest, file: &str) -> Result<(PathBuf, Vec<u8>), VisionError> {
    for c in models::verify(dir, manifest) {
        let why = match c.outcome {
            FileOutcome::Ok => continue,
            FileOutcome::Missing => "is missing".to_string(),
            FileOutcome::Unreadable(e) => format!("cannot be read ({e})"),
            FileOutcome::Mismatch { expected, actual } => {
                format!("has sha256 {actual}, but the manifest says {expected}: damaged or replaced")
            }
        };
        return Err(VisionError::Model(format!(
            "model {}: {} {why}; reinstall the package or run models/fetch.sh",
            manifest.name,
            c.path.display()
        )));
    }
    let w = manifest.files.iter().find(|f| f.role == "weights" && f.path == file).ok_or_else(|| {
        VisionError::Model(format!("model {}: the manifest lists no weights file {file:?}", manifest.name))
    })?;
    let path = dir.join(&manifest.name).join(&w.path);
    let bytes = std::fs::read(&path).map_err(|e| VisionError::Model(format!("{}: {e}", path.display())))?;
    let actual = hex_sha256(&bytes);
    if actual != w.sha256 {
        return Err(VisionError::Model(format!(
            "model {}: {} has sha256 {actual}, but the manifest says {}: damaged or replaced while loading",
            manifest.name,
            path.display(),
            w.sha256
        )));
    }
    Ok((path, bytes))
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

type Plan = std::sync::Arc<TypedRunnableModel>;

/// YOLOX through tract-onnx, one inference thread.
pub struct YoloxTract {
    plan: Plan,
    params: YoloxParams,
    classes: usize,
    padded: Mat,
    model: String,
}

fn model_err(what: &str, e: impl std::fmt::Display) -> VisionError {
    VisionError::Model(format!("{what}: {e}"))
}

impl YoloxTract {
    /// Loads YOLOX from the model directory after verifying its checksums. Use manifests from
    /// `vakt_core::models::builtin()`: their checksums are compiled into the binary.
    pub fn load(dir: &Path, manifest: &Manifest, params: YoloxParams) -> Result<YoloxTract, VisionError> {
        let (weights, bytes) = verified_weights(dir, manifest)?;
        let side = params.input as usize;
        let plan = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(bytes))
            .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, side, side]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| model_err(&format!("model {} ({})", manifest.name, weights.display()), e))?;
        let padded = Mat::new_rows_cols_with_default(side as i32, side as i32, cvcore::CV_8UC3, Scalar::all(114.0))?;
        Ok(YoloxTract { plan, classes: manifest.labels.len(), params, padded, model: manifest.name.clone() })
    }

    /// Letterboxes `frame` into the padded input: resized to fit, top-left, grey 114 elsewhere.
    fn letterbox(&mut self, frame: &BgrFrame<'_>, lb: &Letterbox) -> Result<(), VisionError> {
        let (rw, rh) = lb.resized();
        // SAFETY: `frame.data` holds height rows of 3·width bytes (checked by the caller) and
        // outlives `src`, which is only read within this function.
        let src = unsafe {
            Mat::new_rows_cols_with_data_unsafe_def(
                frame.height as i32,
                frame.width as i32,
                cvcore::CV_8UC3,
                frame.data.as_ptr() as *mut std::ffi::c_void,
            )?
        };
        self.padded.set_to(&Scalar::all(114.0), &cvcore::no_array())?;
        let mut roi = Mat::roi_mut(&mut self.padded, Rect::new(0, 0, rw as i32, rh as i32))?;
        let mut resized = Mat::default();
        imgproc::resize(&src, &mut resized, Size::new(rw as i32, rh as i32), 0.0, 0.0, imgproc::INTER_LINEAR)?;
        resized.copy_to(&mut roi)?;
        Ok(())
    }
}

impl Detector for YoloxTract {
    fn detect(&mut self, frame: &BgrFrame<'_>) -> Result<Vec<Detection>, VisionError> {
        let (w, h) = (frame.width, frame.height);
        if w == 0 || h == 0 || frame.data.len() != (w * h * 3) as usize {
            return Err(VisionError::BadColourFrame { width: w, height: h, got: frame.data.len() });
        }
        let lb = Letterbox::new(self.params.input, w, h);
        self.letterbox(frame, &lb)?;
        let side = self.params.input as usize;
        let hwc = self.padded.data_bytes()?;
        // HWC u8 (BGR) → NCHW f32, 0..255: what YOLOX was exported with.
        let input =
            tract_ndarray::Array4::from_shape_fn((1, 3, side, side), |(_, c, y, x)| hwc[(y * side + x) * 3 + c] as f32);
        let out = self.plan.run(tvec!(Tensor::from(input).into())).map_err(|e| model_err("inference", e))?;
        let view = out[0].to_plain_array_view::<f32>().map_err(|e| model_err("output", e))?;
        let data = view.as_slice().ok_or_else(|| VisionError::Model("output tensor is not contiguous".into()))?;
        let dets = decode_yolox(data, self.classes, &lb, self.params.min_score).map_err(VisionError::Model)?;
        Ok(nms(dets, self.params.nms_iou))
    }

    fn name(&self) -> String {
        format!("{}@tract", self.model)
    }
}
