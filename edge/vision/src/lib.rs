//! Vakt's vision code on plain frames: motion detection, zone measurement and object detection. No GStreamer and
//! no tokio here: frames arrive as byte slices, so the same code serves the box, offline replay
//! and the benchmarks.

pub mod detector;
pub mod face;
pub mod motion;
pub mod tamper;
pub mod zones;

pub use detector::{BgrFrame, Detector, YoloxParams, YoloxTract};
pub use face::{FaceInput, FaceParams, UltraFace};
pub use motion::{
    BackgroundMotion, Blob, GrayFrame, MotionDetector, MotionParams, MotionResult, VisionError, resize_gray,
};
pub use zones::{ZoneMotion, ZoneSet};
