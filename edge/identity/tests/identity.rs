//! Provisioning and loading a box identity in temporary directories.

use std::fs;
use std::path::Path;

use base64::Engine;
use rcgen::PublicKeyData;
use vakt_identity::{
    BOX_ID_FILE, Identity, IdentityError, SIGNING_KEY_FILE, SIGNING_PUB_FILE, TLS_CSR_FILE, TLS_KEY_FILE,
    spki_fingerprint, verify_signature,
};

fn identity_dir(tmp: &tempfile::TempDir) -> std::path::PathBuf {
    tmp.path().join("var/lib/vakt/identity")
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn is_sha256_fingerprint(s: &str) -> bool {
    s.strip_prefix("SHA256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn provision_writes_five_files_with_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = identity_dir(&tmp);
    let report = Identity::provision(&dir, "box-0042", false).unwrap();

    assert_eq!(report.signing_key, dir.join(SIGNING_KEY_FILE));
    assert_eq!(report.tls_csr, dir.join(TLS_CSR_FILE));
    assert!(report.replaced.is_empty());
    assert!(is_sha256_fingerprint(&report.signing_key_fingerprint), "{}", report.signing_key_fingerprint);
    assert!(is_sha256_fingerprint(&report.tls_key_fingerprint), "{}", report.tls_key_fingerprint);

    let mut names: Vec<String> =
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["box_id", "signing.key", "signing.pub", "tls.csr", "tls.key"]);

    #[cfg(unix)]
    {
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&report.signing_key), 0o600);
        assert_eq!(mode(&report.tls_key), 0o600);
        assert_eq!(mode(&report.signing_pub), 0o644);
        assert_eq!(mode(&report.tls_csr), 0o644);
        assert_eq!(mode(&report.box_id_file), 0o644);
    }

    let key = fs::read_to_string(&report.signing_key).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{key}");
    let public = fs::read_to_string(&report.signing_pub).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{public}");
    assert!(fs::read_to_string(&report.tls_key).unwrap().starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(fs::read_to_string(&report.box_id_file).unwrap(), "box-0042\n");
}

#[test]
fn csr_names_the_box() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = identity_dir(&tmp);
    let report = Identity::provision(&dir, "box-0042", false).unwrap();
    let csr = fs::read_to_string(&report.tls_csr).unwrap();
    assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"), "{csr}");
    assert!(csr.trim_end().ends_with("-----END CERTIFICATE REQUEST-----"), "{csr}");

    // The DER holds the box id twice: once as the subject CN, once as the DNS SAN.
    let body: String = csr.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
    let count = der.windows(b"box-0042".len()).filter(|w| *w == b"box-0042").count();
    assert_eq!(count, 2);
}

#[test]
fn tls_fingerprint_is_over_the_spki_der() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = identity_dir(&tmp);
    let report = Identity::provision(&dir, "box-0042", false).unwrap();
    let key = rcgen::KeyPair::from_pem(&fs::read_to_string(&report.tls_key).unwrap()).unwrap();
    assert_eq!(report.tls_key_fingerprint, spki_fingerprint(&key.subject_public_key_info()));
}

#[test]
fn second_provision_refuses_and_names_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = identity_dir(&tmp);
    let first = Identity::provision(&dir, "box-0042", false).unwrap();
    let before = fs::read(&first.signing_key).unwrap();

    let err = Identity::provision(&dir, "box-0042", false).unwrap_err();
    let msg = err.to_string();
    match &err {
        IdentityError::AlreadyProvisioned { existing, .. } => assert_eq!(existing.len(), 5),
        other => panic!("expected AlreadyProvisioned, got {other:?}"),
    }
    assert!(msg.contains("signing.key") && msg.contains("tls.key") && msg.contains("--force"), "{msg}");
    assert_eq!(fs::read(&first.signing_key).unwrap(), before);
}

#[test]
fn a_single_leftover_file_also_blocks_provisioning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = identity_dir(&tmp);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(TLS_KEY_FILE), "old").unwrap();
    let err = Identity::provision(&dir, "box-0042", false).unwrap_err();
    assert!(matches!(err, IdentityError::AlreadyProvisioned { ref existing, .. } if existing.len() == 1), "{err:?}");
}

#[test]
fn force_replaces_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = identity_dir(&tmp);
    let first = Identity::provision(&dir, "box-0042", false).unwrap();
    // the CA's certificate for the first TLS key cannot serve the second
    std::fs::write(dir.join(vakt_identity::TLS_CERT_FILE), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let second = Identity::provision(&dir, "box-0043", true).unwrap();
    assert!(!dir.join(vakt_identity::TLS_CERT_FILE).exists(), "a stale tls.crt survived --force");
    assert_ne!(first.signing_key_fingerprint, second.signing_key_fingerprint);
    assert_ne!(first.tls_key_fingerprint, second.tls_key_fingerprint);
    assert_eq!(second.replaced.len(), 5);

    let id = Identity::load(&dir).unwrap();
    assert_eq!(id.key_id(), second.signing_key_fingerprint);
    assert_eq!(id.box_id(), "box-0043");
    // No temporary files are left behind.
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 5);
    #[cfg(unix)]
    assert_eq!(mode(&second.signing_key), 0o600);
}

#[test]
fn load_sign_verify_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = identity_dir(&tmp);
    let report = Identity::provision(&dir, "box-0042", false).unwrap();

    let id = Identity::load(&dir).unwrap();
    assert_eq!(id.key_id(), report.signing_key_fingerprint);
    assert_eq!(id.box_id(), "box-0042");
    assert_eq!(id.signing_key().verifying_key(), id.verifying_key());

    let msg = b"event 01JD8Z: person in zone door";
    let sig = id.sign(msg);
    let public_pem = fs::read_to_string(&report.signing_pub).unwrap();
    assert_eq!(id.public_key_pem().unwrap(), public_pem);
    verify_signature(&public_pem, msg, &sig).unwrap();

    let err = verify_signature(&public_pem, b"event 01JD8Z: person in zone gate", &sig).unwrap_err();
    assert!(matches!(err, IdentityError::SignatureMismatch), "{err:?}");
    let mut bad = sig;
    bad[10] ^= 1;
    assert!(matches!(verify_signature(&public_pem, msg, &bad), Err(IdentityError::SignatureMismatch)));
    assert!(matches!(
        verify_signature(&public_pem, msg, &sig[..63]),
        Err(IdentityError::MalformedSignature { len: 63 })
    ));
    assert!(matches!(verify_signature("not a key", msg, &sig), Err(IdentityError::BadPublicKey(_))));

    // Another box's key does not verify this box's signature.
    let other = identity_dir(&tmp).with_file_name("other");
    let other = Identity::provision(&other, "box-0043", false).unwrap();
    let other_pem = fs::read_to_string(&other.signing_pub).unwrap();
    assert!(matches!(verify_signature(&other_pem, msg, &sig), Err(IdentityError::SignatureMismatch)));
}

#[cfg(unix)]
#[test]
fn load_refuses_readable_signing_key() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = identity_dir(&tmp);
    let report = Identity::provision(&dir, "box-0042", false).unwrap();
    fs::set_permissions(&report.signing_key, fs::Permissions::from_mode(0o644)).unwrap();

    let err = Identity::load(&dir).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, IdentityError::InsecurePermissions { mode: 0o644, .. }), "{err:?}");
    assert!(msg.contains("signing.key has mode 0644") && msg.contains("chmod 600"), "{msg}");

    fs::set_permissions(&report.signing_key, fs::Permissions::from_mode(0o600)).unwrap();
    Identity::load(&dir).unwrap();
}

#[test]
fn load_without_identity_says_to_provision() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = identity_dir(&tmp);
    let err = Identity::load(&dir).unwrap_err();
    assert!(matches!(err, IdentityError::NotProvisioned { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("no identity in {}: run `vakt provision` first", dir.display()));
}

#[test]
fn load_detects_mismatched_public_key_and_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    Identity::provision(&a, "box-a", false).unwrap();
    Identity::provision(&b, "box-b", false).unwrap();
    fs::copy(b.join(SIGNING_PUB_FILE), a.join(SIGNING_PUB_FILE)).unwrap();
    let err = Identity::load(&a).unwrap_err();
    assert!(matches!(err, IdentityError::KeyMismatch { .. }), "{err:?}");

    fs::remove_file(b.join(BOX_ID_FILE)).unwrap();
    let err = Identity::load(&b).unwrap_err();
    assert!(matches!(err, IdentityError::Incomplete { ref missing, .. } if missing.ends_with(BOX_ID_FILE)), "{err:?}");
}

#[test]
fn bad_box_id_is_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = identity_dir(&tmp);
    let err = Identity::provision(&dir, "box 42", false).unwrap_err();
    assert!(matches!(err, IdentityError::InvalidBoxId { .. }), "{err:?}");
    assert!(!dir.exists());
}
