//! Shared pieces of the benchmarks: the CDnet-2014 layout and labels, pixel-level scores and
//! timing statistics. How to run them, and the results: `benches/RESULTS.md`.

pub mod cdnet;
pub mod stats;
