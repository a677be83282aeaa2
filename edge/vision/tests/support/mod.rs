//! Shared by the vision tests: the repository root and the verified model directory.

use std::path::{Path, PathBuf};

use vakt_core::models;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `.data/models`, with `file` of model `name` in it (models/fetch.sh puts it there).
pub fn models_dir(name: &str, file: &str) -> PathBuf {
    let p = root().join(".data/models");
    assert!(p.join(name).join(file).is_file(), "{} missing: run models/fetch.sh .data/models", p.display());
    p
}

/// The built-in manifest of model `name`.
pub fn manifest(name: &str) -> models::Manifest {
    models::builtin().into_iter().find(|m| m.name == name).unwrap()
}
