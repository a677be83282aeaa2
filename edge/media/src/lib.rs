//! Vakt's GStreamer side: capture with reconnects, the static privacy-mask stage, the pipeline
//! graph check, and the privacy-level frame types every consumer of pictures must use.

pub mod capture;
pub mod graph;
pub mod mask;
pub mod privacy;

pub use capture::{Capture, CaptureConfig, CaptureCounters, CaptureMsg, Pacing, Recovery};
pub use privacy::{PeopleEvidence, RedactedFrame, StaticMaskedFrame, redact};

/// Builds a pipeline from a description, for tests and tools, and runs the graph check on it.
pub use graph::paths_bypassing_mask;
