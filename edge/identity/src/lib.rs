//! The box's identity: its Ed25519 signing key, its TLS key and certificate signing request, and the files
//! they live in.
//!
//! # Files
//!
//! [`Identity::provision`] writes five files into the identity directory (mode 0700):
//!
//! | file          | contents                                           | mode |
//! |---------------|----------------------------------------------------|------|
//! | `signing.key` | Ed25519 private key, PKCS#8 PEM (`PRIVATE KEY`)    | 0600 |
//! | `signing.pub` | Ed25519 public key, SPKI PEM (`PUBLIC KEY`)        | 0644 |
//! | `tls.key`     | ECDSA P-256 private key, PKCS#8 PEM                | 0600 |
//! | `tls.csr`     | PKCS#10 request, CN and DNS SAN = box id           | 0644 |
//! | `box_id`      | the box id and a newline                           | 0644 |
//!
//! Each file is written to a temporary name in the same directory and fsynced; then all are renamed into
//! place and the directory is fsynced. A crash before the renames leaves the old identity whole; a crash
//! during them (only possible with `force`) can leave old and new files mixed, which [`Identity::load`]
//! detects when `signing.pub` no longer matches `signing.key`.
//!
//! # Fingerprints
//!
//! - signing key: `"SHA256:"` + lowercase hex of SHA-256 over the 32 raw public key bytes; this is
//!   [`Identity::key_id`].
//! - TLS key: `"SHA256:"` + lowercase hex of SHA-256 over the DER SubjectPublicKeyInfo of the public key.

mod error;
mod files;

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData, SanType};
use sha2::{Digest, Sha256};

pub use error::IdentityError;

/// Ed25519 private key, PKCS#8 PEM, mode 0600.
pub const SIGNING_KEY_FILE: &str = "signing.key";
/// Ed25519 public key, SPKI PEM, mode 0644.
pub const SIGNING_PUB_FILE: &str = "signing.pub";
/// TLS (ECDSA P-256) private key, PKCS#8 PEM, mode 0600.
pub const TLS_KEY_FILE: &str = "tls.key";
/// TLS certificate signing request, PEM, mode 0644.
pub const TLS_CSR_FILE: &str = "tls.csr";
/// The box's TLS client certificate (PEM, the CA's answer to `tls.csr`), mode 0644: placed by the
/// technician; with it the box authenticates to the broker (mutual TLS).
pub const TLS_CERT_FILE: &str = "tls.crt";
/// The box id, one line, mode 0644.
pub const BOX_ID_FILE: &str = "box_id";

/// All files of an identity, in the order they are renamed into place.
const FILES: [&str; 5] = [BOX_ID_FILE, TLS_KEY_FILE, TLS_CSR_FILE, SIGNING_PUB_FILE, SIGNING_KEY_FILE];

const PRIVATE_MODE: u32 = 0o600;
const PUBLIC_MODE: u32 = 0o644;

/// What [`Identity::provision`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionReport {
    pub dir: PathBuf,
    pub box_id: String,
    pub signing_key: PathBuf,
    pub signing_pub: PathBuf,
    pub tls_key: PathBuf,
    pub tls_csr: PathBuf,
    pub box_id_file: PathBuf,
    /// `"SHA256:"` + hex of the raw Ed25519 public key's SHA-256; the new [`Identity::key_id`].
    pub signing_key_fingerprint: String,
    /// `"SHA256:"` + hex of the SHA-256 of the TLS public key's DER SubjectPublicKeyInfo.
    pub tls_key_fingerprint: String,
    /// Files that existed before and were replaced (only with `force`).
    pub replaced: Vec<PathBuf>,
}

/// A loaded identity: the box id and its signing key.
pub struct Identity {
    dir: PathBuf,
    box_id: String,
    signing_key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for Identity {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("dir", &self.dir)
            .field("box_id", &self.box_id)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Generates a new identity for `box_id` in `dir` (created with mode 0700 if missing).
    ///
    /// Refuses with [`IdentityError::AlreadyProvisioned`] if any identity file exists, unless `force`, in which
    /// case they are replaced and the old keys are gone.
    pub fn provision(dir: &Path, box_id: &str, force: bool) -> Result<ProvisionReport, IdentityError> {
        validate_box_id(box_id)?;
        files::create_private_dir(dir)?;

        let mut existing = Vec::new();
        for name in FILES {
            let path = dir.join(name);
            match std::fs::symlink_metadata(&path) {
                Ok(_) => existing.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(IdentityError::Io { path, op: "inspect", source }),
            }
        }
        if !existing.is_empty() && !force {
            return Err(IdentityError::AlreadyProvisioned { dir: dir.to_owned(), existing });
        }

        let signing_key = {
            let mut seed = [0u8; ed25519_dalek::SECRET_KEY_LENGTH];
            getrandom::fill(&mut seed).map_err(IdentityError::Random)?;
            SigningKey::from_bytes(&seed)
        };
        let verifying_key = signing_key.verifying_key();
        let signing_key_pem = signing_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| IdentityError::Encode { what: "Ed25519 private key", reason: e.to_string() })?;
        let signing_pub_pem = verifying_key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| IdentityError::Encode { what: "Ed25519 public key", reason: e.to_string() })?;

        let tls_key = KeyPair::generate()?;
        let tls_csr_pem = csr_pem(box_id, &tls_key)?;
        let tls_key_pem = tls_key.serialize_pem();

        let box_id_line = format!("{box_id}\n");
        let contents: [(&str, &[u8], u32); 5] = [
            (BOX_ID_FILE, box_id_line.as_bytes(), PUBLIC_MODE),
            (TLS_KEY_FILE, tls_key_pem.as_bytes(), PRIVATE_MODE),
            (TLS_CSR_FILE, tls_csr_pem.as_bytes(), PUBLIC_MODE),
            (SIGNING_PUB_FILE, signing_pub_pem.as_bytes(), PUBLIC_MODE),
            (SIGNING_KEY_FILE, signing_key_pem.as_bytes(), PRIVATE_MODE),
        ];
        files::replace_all(dir, &contents)?;
        // a certificate for the old TLS key does not fit the new one: the CA must sign the new CSR
        let stale_cert = dir.join(TLS_CERT_FILE);
        match std::fs::remove_file(&stale_cert) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(IdentityError::Io { path: stale_cert, op: "remove", source }),
        }

        Ok(ProvisionReport {
            dir: dir.to_owned(),
            box_id: box_id.to_owned(),
            signing_key: dir.join(SIGNING_KEY_FILE),
            signing_pub: dir.join(SIGNING_PUB_FILE),
            tls_key: dir.join(TLS_KEY_FILE),
            tls_csr: dir.join(TLS_CSR_FILE),
            box_id_file: dir.join(BOX_ID_FILE),
            signing_key_fingerprint: signing_key_fingerprint(&verifying_key),
            tls_key_fingerprint: spki_fingerprint(&tls_key.subject_public_key_info()),
            replaced: existing,
        })
    }

    /// Loads the identity in `dir`: the box id and the signing key.
    ///
    /// Refuses a `signing.key` that users other than its owner can read or write (unix), and a `signing.pub`
    /// that does not match it.
    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        let key_path = dir.join(SIGNING_KEY_FILE);
        let Some(key_pem) = files::read_private(&key_path)? else {
            return Err(IdentityError::NotProvisioned { dir: dir.to_owned() });
        };
        let signing_key = SigningKey::from_pkcs8_pem(&key_pem).map_err(|e| IdentityError::BadKeyFile {
            path: key_path.clone(),
            what: "Ed25519 private key (PKCS#8 PEM)",
            reason: e.to_string(),
        })?;
        let verifying_key = signing_key.verifying_key();

        let pub_path = dir.join(SIGNING_PUB_FILE);
        let pub_pem = files::read_required(dir, &pub_path)?;
        let stored_pub = VerifyingKey::from_public_key_pem(&pub_pem).map_err(|e| IdentityError::BadKeyFile {
            path: pub_path.clone(),
            what: "Ed25519 public key (SPKI PEM)",
            reason: e.to_string(),
        })?;
        if stored_pub != verifying_key {
            return Err(IdentityError::KeyMismatch { private: key_path, public: pub_path });
        }

        let box_id_path = dir.join(BOX_ID_FILE);
        let box_id = files::read_required(dir, &box_id_path)?.trim_end().to_owned();
        validate_box_id(&box_id).map_err(|e| IdentityError::BadKeyFile {
            path: box_id_path,
            what: "box id file",
            reason: e.to_string(),
        })?;

        Ok(Identity { dir: dir.to_owned(), box_id, key_id: signing_key_fingerprint(&verifying_key), signing_key })
    }

    /// The directory the identity was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The box id given at provisioning.
    pub fn box_id(&self) -> &str {
        &self.box_id
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing_key.verifying_key()
    }

    /// The signing key's fingerprint, `"SHA256:<hex>"`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key as SPKI PEM, as in `signing.pub`.
    pub fn public_key_pem(&self) -> Result<String, IdentityError> {
        self.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| IdentityError::Encode { what: "Ed25519 public key", reason: e.to_string() })
    }

    /// Signs `msg` with the box's Ed25519 key.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing_key.sign(msg).to_bytes()
    }
}

/// Checks that `sig` is a valid Ed25519 signature of `msg` by the key in `public_pem` (SPKI PEM, as in
/// `signing.pub`). Uses strict verification (rejects malleable and small-order-key signatures).
pub fn verify_signature(public_pem: &str, msg: &[u8], sig: &[u8]) -> Result<(), IdentityError> {
    let key = VerifyingKey::from_public_key_pem(public_pem).map_err(|e| IdentityError::BadPublicKey(e.to_string()))?;
    let sig = Signature::from_slice(sig).map_err(|_| IdentityError::MalformedSignature { len: sig.len() })?;
    key.verify_strict(msg, &sig).map_err(|_| IdentityError::SignatureMismatch)
}

/// `"SHA256:"` + lowercase hex of SHA-256 over the 32 raw public key bytes.
pub fn signing_key_fingerprint(key: &VerifyingKey) -> String {
    format!("SHA256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// `"SHA256:"` + lowercase hex of SHA-256 over a DER SubjectPublicKeyInfo (the TLS key fingerprint).
pub fn spki_fingerprint(spki_der: &[u8]) -> String {
    format!("SHA256:{}", hex::encode(Sha256::digest(spki_der)))
}

/// A PKCS#10 request with subject CN = `box_id` and one DNS SAN = `box_id`, signed by `key`.
fn csr_pem(box_id: &str, key: &KeyPair) -> Result<String, IdentityError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, box_id);
    params.distinguished_name = name;
    params.subject_alt_names = vec![SanType::DnsName(box_id.try_into()?)];
    Ok(params.serialize_request(key)?.pem()?)
}

/// A box id must be a DNS name: it goes into the certificate's CN and DNS SAN.
fn validate_box_id(box_id: &str) -> Result<(), IdentityError> {
    let invalid = |reason| Err(IdentityError::InvalidBoxId { box_id: box_id.to_owned(), reason });
    if box_id.is_empty() {
        return invalid("it is empty");
    }
    if box_id.len() > 253 {
        return invalid("it is longer than 253 characters");
    }
    for label in box_id.split('.') {
        if label.is_empty() {
            return invalid("it has an empty label (leading, trailing or double '.')");
        }
        if label.len() > 63 {
            return invalid("a label is longer than 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return invalid("it has characters other than letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return invalid("a label starts or ends with '-'");
        }
    }
    if box_id.parse::<std::net::IpAddr>().is_ok() {
        return invalid("it is an IP address");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_ids() {
        for ok in ["box-0042", "cam1.site-a.example", "B0X"] {
            assert!(validate_box_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "box_0042", "-box", "box-", "a..b", ".box", "box.", "10.0.0.1", "box 1", "bøx"] {
            assert!(validate_box_id(bad).is_err(), "{bad}");
        }
    }
}
