//! Errors of provisioning and loading the box's identity, each naming the file and what to do about it.

use std::path::PathBuf;

/// Why provisioning, loading or verifying failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The file system refused; `op` says what we were doing.
    #[error("{op} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// There is no signing key in the directory.
    #[error("no identity in {}: run `vakt provision` first", dir.display())]
    NotProvisioned { dir: PathBuf },

    /// Provisioning without `force` found identity files that it would replace.
    #[error(
        "an identity already exists in {} ({}): refusing to replace it; run `vakt provision --force` to \
         generate new keys (the old keys are lost and the box must be re-enrolled)",
        dir.display(),
        display_paths(existing)
    )]
    AlreadyProvisioned { dir: PathBuf, existing: Vec<PathBuf> },

    /// The signing key file can be read or written by users other than its owner.
    #[error(
        "{} has mode {mode:04o}: the signing key must be readable only by its owner; run `chmod 600 {}`, \
         and if other users could have copied it, run `vakt provision --force`",
        path.display(),
        path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },

    /// A file of a provisioned identity is missing (provisioning was interrupted, or the file was removed).
    #[error("identity in {} is incomplete: {} is missing; run `vakt provision --force`", dir.display(), missing.display())]
    Incomplete { dir: PathBuf, missing: PathBuf },

    /// A key file does not hold what it should.
    #[error("{} is not a valid {what}: {reason}; restore it from backup or run `vakt provision --force`", path.display())]
    BadKeyFile { path: PathBuf, what: &'static str, reason: String },

    /// `signing.pub` does not belong to `signing.key`.
    #[error(
        "{} does not match {}: the identity is inconsistent; run `vakt provision --force`",
        public.display(),
        private.display()
    )]
    KeyMismatch { private: PathBuf, public: PathBuf },

    /// The box id cannot be a certificate common name and DNS name.
    #[error(
        "box id {box_id:?} is not usable: {reason}; use DNS labels of letters, digits and '-' separated by '.', \
         like \"box-0042\""
    )]
    InvalidBoxId { box_id: String, reason: &'static str },

    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),

    /// Encoding a freshly generated key failed.
    #[error("encoding the {what} failed: {reason}")]
    Encode { what: &'static str, reason: String },

    /// rcgen could not generate the TLS key pair or the certificate signing request.
    #[error("generating the TLS key or certificate signing request failed: {0}")]
    Tls(#[from] rcgen::Error),

    /// [`crate::verify_signature`] was given a public key that is not an Ed25519 SPKI PEM.
    #[error("not an Ed25519 public key (SPKI PEM, \"-----BEGIN PUBLIC KEY-----\"): {0}")]
    BadPublicKey(String),

    /// [`crate::verify_signature`] was given something that is not 64 bytes.
    #[error("an Ed25519 signature is 64 bytes, got {len}")]
    MalformedSignature { len: usize },

    /// The signature is well-formed but does not verify for this key and message.
    #[error("signature does not verify: wrong key, or the message or signature was altered")]
    SignatureMismatch,
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}
