//! Keys: random keys and wrapping (XChaCha20-Poly1305), the [`KeyProvider`] that holds the secret
//! that is never on the card, and the epoch keys with their journal. Design:
//! `edge/docs/design/ring-buffer.md`, "Key hierarchy and crypto-shredding".

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::StoreError;
use crate::io::Storage;

pub type Key = Zeroizing<[u8; 32]>;

/// Length of a wrapped key: 24-byte nonce, 32-byte key, 16-byte tag.
pub const WRAPPED_LEN: usize = 24 + 32 + 16;

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    b
}

pub fn random_key() -> Key {
    Zeroizing::new(random_bytes::<32>())
}

/// Seals `plain` under `kek` with a fresh random nonce: nonce ‖ ciphertext ‖ tag.
pub fn wrap(kek: &Key, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let nonce = random_bytes::<24>();
    let c = XChaCha20Poly1305::new(kek.as_ref().into());
    let ct = c.encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad }).expect("encryption cannot fail");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    out
}

/// Opens what [`wrap`] sealed; `None` for a wrong key, wrong `aad` or damaged bytes.
pub fn unwrap(kek: &Key, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < 24 + 16 {
        return None;
    }
    let c = XChaCha20Poly1305::new(kek.as_ref().into());
    c.decrypt(XNonce::from_slice(&sealed[..24]), Payload { msg: &sealed[24..], aad }).ok().map(Zeroizing::new)
}

pub fn unwrap_key(kek: &Key, aad: &[u8], sealed: &[u8]) -> Option<Key> {
    let plain = unwrap(kek, aad, sealed)?;
    let arr: [u8; 32] = plain.as_slice().try_into().ok()?;
    Some(Zeroizing::new(arr))
}

/// Where the secret that protects the footage keys lives. With a persistent provider the epoch
/// keys are written to the key journal sealed under the provider's key; without one they stay in
/// this process's memory only.
pub trait KeyProvider: Send {
    /// For the status message and `vakt doctor`: `ram`, `credential`, ...
    fn protection(&self) -> &'static str;
    /// The key that seals the journal; `None`: keep epoch keys in memory only.
    fn journal_key(&self) -> Option<&Key>;
    /// Destroys what the provider can destroy; says what it destroyed and what it could not.
    fn destroy(&mut self) -> Vec<String>;
}

/// RAM only (the generic default): nothing survives the process, so footage is unreadable after
/// a restart or power cut, by anyone, the box included (G2).
#[derive(Default)]
pub struct RamProvider;

impl KeyProvider for RamProvider {
    fn protection(&self) -> &'static str {
        "ram"
    }
    fn journal_key(&self) -> Option<&Key> {
        None
    }
    fn destroy(&mut self) -> Vec<String> {
        vec!["the footage keys held in memory (they end with the process)".into()]
    }
}

/// A 32-byte key delivered by systemd as a credential (`LoadCredentialEncrypted=`): systemd
/// decrypts it at service start into a RAM-backed directory (`$CREDENTIALS_DIRECTORY`), sealed by
/// the board's TPM 2.0 where it has one (`systemd-creds encrypt --with-key=tpm2`). The sealed
/// credential is not on the footage card in usable form; it cannot be erased by Vakt, so deleted
/// journals stay openable by someone who also has the credential (like `otp`, design case (c)).
pub struct CredentialProvider {
    key: Key,
    source: PathBuf,
}

impl CredentialProvider {
    /// Reads the key: 32 raw bytes, or 64 hex digits (surrounding whitespace ignored).
    pub fn load(path: &Path) -> Result<CredentialProvider, StoreError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| StoreError::Key {
            what: format!("cannot read the footage key credential {}: {e}", path.display()),
        })?);
        let key: [u8; 32] = if bytes.len() == 32 {
            bytes.as_slice().try_into().expect("length checked")
        } else {
            let text = String::from_utf8_lossy(&bytes);
            let mut out = [0u8; 32];
            hex::decode_to_slice(text.trim(), &mut out).map_err(|_| StoreError::Key {
                what: format!(
                    "the footage key credential {} holds {} bytes: it must be 32 random bytes or 64 hex digits",
                    path.display(),
                    bytes.len()
                ),
            })?;
            out
        };
        Ok(CredentialProvider { key: Zeroizing::new(key), source: path.to_path_buf() })
    }
}

impl KeyProvider for CredentialProvider {
    fn protection(&self) -> &'static str {
        "credential"
    }
    fn journal_key(&self) -> Option<&Key> {
        Some(&self.key)
    }
    fn destroy(&mut self) -> Vec<String> {
        vec![format!(
            "NOT destroyed: the sealed credential behind {} (Vakt cannot erase it; remove it from the credential store, e.g. /etc/credstore.encrypted/, or clear the TPM)",
            self.source.display()
        )]
    }
}

/// The epoch keys, and their journal `keys/journal.<generation>` when the provider persists them.
pub struct Keyring {
    epochs: BTreeMap<u64, Key>,
    generation: u64,
    dir: PathBuf,
    box_id: String,
}

/// What loading the keyring found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct KeyringReport {
    pub epochs: usize,
    /// Journal files removed: older generations, a rotation cut short, or journals no key opens.
    pub journals_removed: usize,
    /// Journals existed but none opened with the provider's key: every footage key is lost.
    pub unreadable: bool,
}

fn journal_aad(box_id: &str, generation: u64) -> Vec<u8> {
    format!("vakt-journal|{box_id}|{generation}").into_bytes()
}

fn journal_generation(name: &str) -> Option<u64> {
    name.strip_prefix("journal.")?.parse().ok()
}

impl Keyring {
    /// Recovery step 2: opens the newest journal the provider's key opens; removes the others.
    pub fn load(
        io: &dyn Storage,
        provider: &dyn KeyProvider,
        dir: &Path,
        box_id: &str,
    ) -> Result<(Keyring, KeyringReport), StoreError> {
        let mut ring =
            Keyring { epochs: BTreeMap::new(), generation: 0, dir: dir.to_path_buf(), box_id: box_id.into() };
        let mut report = KeyringReport::default();
        let files = io.list(dir).map_err(|e| StoreError::io("list", dir, e))?;
        let mut journals: Vec<(u64, String)> =
            files.iter().filter_map(|(n, _)| journal_generation(n).map(|g| (g, n.clone()))).collect();
        journals.sort_by_key(|j| std::cmp::Reverse(j.0));
        let mut chosen: Option<u64> = None;
        if let Some(kek) = provider.journal_key() {
            for (g, name) in &journals {
                let path = dir.join(name);
                let bytes = io.read(&path).map_err(|e| StoreError::io("read", &path, e))?;
                if let Some(plain) = unwrap(kek, &journal_aad(box_id, *g), &bytes) {
                    ring.epochs = parse_journal(&plain)
                        .ok_or_else(|| StoreError::Key { what: format!("{} is damaged", path.display()) })?;
                    ring.generation = *g;
                    chosen = Some(*g);
                    break;
                }
            }
            report.unreadable = chosen.is_none() && !journals.is_empty();
        } else {
            report.unreadable = !journals.is_empty();
        }
        let mut removed = false;
        for (name, _) in &files {
            let stale = match journal_generation(name) {
                Some(g) => Some(g) != chosen,
                None => name.starts_with("journal."),
            };
            if stale {
                let path = dir.join(name);
                io.remove(&path).map_err(|e| StoreError::io("remove", &path, e))?;
                report.journals_removed += 1;
                removed = true;
            }
        }
        if removed {
            io.sync_dir(dir).map_err(|e| StoreError::io("fsync", dir, e))?;
        }
        report.epochs = ring.epochs.len();
        Ok((ring, report))
    }

    pub fn get(&self, epoch: u64) -> Option<&Key> {
        self.epochs.get(&epoch)
    }

    pub fn epochs(&self) -> Vec<u64> {
        self.epochs.keys().copied().collect()
    }

    /// Writing step 1: the epoch's key, made and anchored (journal rotated) if it is new. A new key
    /// is returned only once it is durable.
    pub fn ensure(&mut self, io: &dyn Storage, provider: &dyn KeyProvider, epoch: u64) -> Result<Key, StoreError> {
        if let Some(k) = self.epochs.get(&epoch) {
            return Ok(k.clone());
        }
        let key = random_key();
        self.epochs.insert(epoch, key.clone());
        if let Err(e) = self.persist(io, provider) {
            self.epochs.remove(&epoch);
            return Err(e);
        }
        Ok(key)
    }

    /// Destroys epoch keys (deleting step 6); they count as destroyed once the rotation is durable.
    pub fn destroy(&mut self, io: &dyn Storage, provider: &dyn KeyProvider, epochs: &[u64]) -> Result<(), StoreError> {
        if epochs.is_empty() {
            return Ok(());
        }
        for e in epochs {
            self.epochs.remove(e);
        }
        self.persist(io, provider)
    }

    /// Rotating the anchor: journal.<g+1> written, synced and renamed in, then journal.<g> removed.
    fn persist(&mut self, io: &dyn Storage, provider: &dyn KeyProvider) -> Result<(), StoreError> {
        let Some(kek) = provider.journal_key() else { return Ok(()) };
        let next = self.generation + 1;
        let mut plain = Zeroizing::new(Vec::with_capacity(self.epochs.len() * 40));
        for (e, k) in &self.epochs {
            plain.extend_from_slice(&e.to_le_bytes());
            plain.extend_from_slice(k.as_ref());
        }
        let sealed = wrap(kek, &journal_aad(&self.box_id, next), &plain);
        let tmp = self.dir.join(format!("journal.{next}.tmp"));
        let path = self.dir.join(format!("journal.{next}"));
        // a rotation that failed earlier in this process may have left its `.tmp`
        match io.remove(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("remove", &tmp, e)),
        }
        let mut f = io.create_new(&tmp).map_err(|e| StoreError::io("create", &tmp, e))?;
        f.append(&sealed).map_err(|e| StoreError::io("write", &tmp, e))?;
        f.sync().map_err(|e| StoreError::io("fsync", &tmp, e))?;
        drop(f);
        io.rename(&tmp, &path).map_err(|e| StoreError::io("rename", &tmp, e))?;
        io.sync_dir(&self.dir).map_err(|e| StoreError::io("fsync", &self.dir, e))?;
        if self.generation > 0 {
            let old = self.dir.join(format!("journal.{}", self.generation));
            match io.remove(&old) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove", &old, e)),
            }
            io.sync_dir(&self.dir).map_err(|e| StoreError::io("fsync", &self.dir, e))?;
        }
        self.generation = next;
        Ok(())
    }

    /// Decommission: every epoch key forgotten and every journal removed.
    pub fn destroy_all(&mut self, io: &dyn Storage) -> Result<usize, StoreError> {
        let n = self.epochs.len();
        self.epochs.clear();
        let files = io.list(&self.dir).map_err(|e| StoreError::io("list", &self.dir, e))?;
        for (name, _) in files {
            if name.starts_with("journal.") {
                let p = self.dir.join(&name);
                io.remove(&p).map_err(|e| StoreError::io("remove", &p, e))?;
            }
        }
        io.sync_dir(&self.dir).map_err(|e| StoreError::io("fsync", &self.dir, e))?;
        Ok(n)
    }
}

fn parse_journal(plain: &[u8]) -> Option<BTreeMap<u64, Key>> {
    if !plain.len().is_multiple_of(40) {
        return None;
    }
    let mut out = BTreeMap::new();
    for rec in plain.chunks_exact(40) {
        let e = u64::from_le_bytes(rec[..8].try_into().ok()?);
        let k: [u8; 32] = rec[8..].try_into().ok()?;
        out.insert(e, Zeroizing::new(k));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SimDisk;

    struct Fixed(Key);
    impl KeyProvider for Fixed {
        fn protection(&self) -> &'static str {
            "test"
        }
        fn journal_key(&self) -> Option<&Key> {
            Some(&self.0)
        }
        fn destroy(&mut self) -> Vec<String> {
            Vec::new()
        }
    }

    #[test]
    fn wrapped_keys_open_only_with_their_key_and_place() {
        let (kek, other) = (random_key(), random_key());
        let w = wrap(&kek, b"a", b"secret");
        assert_eq!(unwrap(&kek, b"a", &w).unwrap().as_slice(), b"secret");
        assert!(unwrap(&kek, b"b", &w).is_none(), "bound to its associated data");
        assert!(unwrap(&other, b"a", &w).is_none());
    }

    #[test]
    fn the_journal_survives_a_restart_only_with_the_providers_key() {
        let d = SimDisk::new();
        let dir = Path::new("/k");
        d.create_dir_all(dir).unwrap();
        let p = Fixed(random_key());
        let (mut ring, _) = Keyring::load(&d, &p, dir, "b1").unwrap();
        let k1 = ring.ensure(&d, &p, 1).unwrap();
        ring.ensure(&d, &p, 2).unwrap();
        ring.destroy(&d, &p, &[2]).unwrap();
        assert_eq!(d.list(dir).unwrap().len(), 1, "old generations are removed");
        d.power_cut();
        let (ring2, r) = Keyring::load(&d, &p, dir, "b1").unwrap();
        assert_eq!(ring2.epochs(), vec![1]);
        assert_eq!(ring2.get(1).unwrap().as_ref(), k1.as_ref());
        assert!(!r.unreadable);
        let (ring3, r) = Keyring::load(&d, &Fixed(random_key()), dir, "b1").unwrap();
        assert!(ring3.epochs().is_empty() && r.unreadable && r.journals_removed == 1);
    }

    #[test]
    fn a_credential_must_be_32_bytes_or_64_hex_digits() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("k");
        std::fs::write(&p, "00".repeat(32) + "\n").unwrap();
        assert!(CredentialProvider::load(&p).is_ok());
        std::fs::write(&p, "short").unwrap();
        let e = CredentialProvider::load(&p).err().unwrap().to_string();
        assert!(e.contains("32 random bytes or 64 hex digits") && e.contains("holds 5 bytes"), "{e}");
    }
}
