//! Vakt's vision code on plain frames: motion detection and zone measurement. No GStreamer and
//! no tokio here: frames arrive as byte slices, so the same code serves the box, offline replay
//! and the benchmarks.

pub mod motion;
pub mod tamper;
pub mod zones;

pub use motion::{BackgroundMotion, Blob, GrayFrame, MotionDetector, MotionParams, MotionResult, VisionError};
pub use zones::{ZoneMotion, ZoneSet};
