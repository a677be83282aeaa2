//! Vakt's GStreamer side: capture with reconnects, the static privacy-mask stage, the pipeline
//! graph check, and the privacy-level frame types every consumer of pictures must use.

pub mod capture;
pub mod elements;
pub mod graph;
pub mod mask;
pub mod privacy;

pub use capture::{Capture, CaptureConfig, CaptureCounters, CaptureMsg, Pacing, Recovery};
pub use privacy::{PeopleEvidence, RedactedFrame, StaticMaskedFrame, redact};

pub use graph::{GraphReport, check as check_graph};
