//! Vakt's pure core: configuration, geometry, the event contract and lifecycle policy.
//! Nothing here depends on tokio, GStreamer or OpenCV, so it can be tested with tables.

pub mod clock;
pub mod command;
pub mod config;
pub mod counters;
pub mod detect;
pub mod event;
pub mod geometry;
pub mod hardware;
pub mod lifecycle;
pub mod models;
pub mod redaction;
pub mod rules;
pub mod source;
pub mod tamper;
pub mod track;

/// Stems of the `*.toml` files in a folder of the repository, sorted: the tests that check every
/// shipped profile and manifest is compiled in use it.
#[cfg(test)]
pub(crate) fn toml_stems(repo_dir: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(repo_dir);
    let mut stems: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    stems.sort();
    stems
}
