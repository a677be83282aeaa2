//! Model manifests (`models/*.toml`, schema in `models/README.md`), compiled into the binary so
//! that the checksums a box trusts cannot be changed by editing files on its card. Models are
//! installed under `[models] dir` as `<dir>/<name>/<path>`; [`verify`] checks every file.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The manifests shipped with the box: (name, TOML text).
pub const BUILTIN: &[(&str, &str)] = &[
    ("yolox_nano", include_str!("../../../models/yolox_nano.toml")),
    ("nanodet_m_320", include_str!("../../../models/nanodet_m_320.toml")),
    ("yunet", include_str!("../../../models/yunet.toml")),
    ("ultraface", include_str!("../../../models/ultraface.toml")),
];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub description: String,
    pub task: String,
    pub licence: String,
    pub upstream: String,
    pub input: String,
    pub output: String,
    pub labels: Vec<String>,
    pub files: Vec<ModelFile>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub path: String,
    pub sha256: String,
    pub url: String,
    pub role: String,
}

/// Parses a manifest and checks its fields.
pub fn parse(text: &str) -> Result<Manifest, String> {
    let m: Manifest = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
    if m.files.is_empty() {
        return Err(format!("model {}: `files` is empty", m.name));
    }
    for f in &m.files {
        if f.sha256.len() != 64 || !f.sha256.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
            return Err(format!(
                "model {}: `sha256` = {:?} of {} is not 64 lower-case hex digits",
                m.name, f.sha256, f.path
            ));
        }
        if f.path.is_empty() || f.path.contains("..") || f.path.starts_with('/') {
            return Err(format!(
                "model {}: `path` = {:?} must be relative, inside the model's directory",
                m.name, f.path
            ));
        }
        if !["weights", "licence", "labels"].contains(&f.role.as_str()) {
            return Err(format!("model {}: `role` = {:?}: \"weights\", \"licence\" or \"labels\"", m.name, f.role));
        }
    }
    if !m.files.iter().any(|f| f.role == "weights") {
        return Err(format!("model {}: no file with role \"weights\"", m.name));
    }
    Ok(m)
}

/// Every shipped manifest.
pub fn builtin() -> Vec<Manifest> {
    BUILTIN.iter().map(|(_, t)| parse(t).expect("built-in manifests parse (tested)")).collect()
}

/// One checked file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileCheck {
    pub model: String,
    pub path: PathBuf,
    pub outcome: FileOutcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FileOutcome {
    Ok,
    Missing,
    Unreadable(String),
    Mismatch { expected: String, actual: String },
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Checks the files of `manifest` under `dir/<name>/`.
pub fn verify(dir: &Path, manifest: &Manifest) -> Vec<FileCheck> {
    manifest
        .files
        .iter()
        .map(|f| {
            let path = dir.join(&manifest.name).join(&f.path);
            let outcome = match sha256_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileOutcome::Missing,
                Err(e) => FileOutcome::Unreadable(e.to_string()),
                Ok(actual) if actual == f.sha256 => FileOutcome::Ok,
                Ok(actual) => FileOutcome::Mismatch { expected: f.sha256.clone(), actual },
            };
            FileCheck { model: manifest.name.clone(), path, outcome }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_manifest_parses_and_is_compiled_in() {
        let on_disk = crate::toml_stems("models");
        let mut built: Vec<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
        built.sort();
        assert_eq!(on_disk, built, "every models/*.toml must be listed in BUILTIN");
        for (name, text) in BUILTIN {
            let m = parse(text).unwrap_or_else(|e| panic!("models/{name}.toml: {e}"));
            assert_eq!(&m.name, name);
        }
        let yolox = builtin().into_iter().find(|m| m.name == "yolox_nano").unwrap();
        assert_eq!(yolox.labels.len(), 80);
        assert_eq!(yolox.labels[0], "person");
    }

    #[test]
    fn verify_reports_missing_and_mismatched_files() {
        let tmp = tempfile::tempdir().unwrap();
        let m = Manifest {
            name: "toy".into(),
            description: String::new(),
            task: "object-detection".into(),
            licence: "MIT".into(),
            upstream: String::new(),
            input: String::new(),
            output: String::new(),
            labels: vec![],
            files: vec![
                ModelFile {
                    path: "a.onnx".into(),
                    // sha256("abc")
                    sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
                    url: String::new(),
                    role: "weights".into(),
                },
                ModelFile { path: "b.txt".into(), sha256: "0".repeat(64), url: String::new(), role: "labels".into() },
                ModelFile { path: "c.txt".into(), sha256: "0".repeat(64), url: String::new(), role: "licence".into() },
            ],
        };
        std::fs::create_dir_all(tmp.path().join("toy")).unwrap();
        std::fs::write(tmp.path().join("toy/a.onnx"), b"abc").unwrap();
        std::fs::write(tmp.path().join("toy/b.txt"), b"tampered").unwrap();
        let r = verify(tmp.path(), &m);
        assert_eq!(r[0].outcome, FileOutcome::Ok);
        assert!(matches!(&r[1].outcome, FileOutcome::Mismatch { expected, .. } if expected == &"0".repeat(64)));
        assert_eq!(r[2].outcome, FileOutcome::Missing);
    }

    #[test]
    fn bad_manifests_are_refused() {
        let good = BUILTIN[0].1;
        assert!(parse(&good.replacen("role = \"weights\"", "role = \"other\"", 1)).unwrap_err().contains("role"));
        assert!(parse(&format!("{good}\nextra = 1\n")).is_err());
    }
}
