//! Vakt's GStreamer side: capture with reconnects, the static privacy-mask stage, the pipeline
//! graph check, and the privacy-level frame types every consumer of pictures must use.

pub mod capture;
pub mod egress;
pub mod elements;
pub mod graph;
pub mod mask;
pub mod privacy;
pub mod record;

pub use capture::{Capture, CaptureConfig, CaptureCounters, CaptureMsg, Pacing, Recovery};
pub use egress::ClipWriter;
pub use privacy::{RedactedFrame, Redactor, StaticMaskedFrame};
pub use record::{EncodedUnit, Encoder};

pub use graph::{GraphReport, check as check_graph};
