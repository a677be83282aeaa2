//! Vakt's pure core: configuration, geometry, the event contract and lifecycle policy.
//! Nothing here depends on tokio, GStreamer or OpenCV, so it can be tested with tables.

pub mod clock;
pub mod config;
pub mod counters;
pub mod detect;
pub mod event;
pub mod geometry;
pub mod hardware;
pub mod lifecycle;
pub mod models;
pub mod source;
pub mod tamper;
pub mod track;
