//! Persisted counters: the per-box message `seq` (reserved in blocks, never reused) and the
//! `boot` counter. Design: `edge/docs/design/time.md`, invariants C1–C3.
//!
//! C1. A seq is handed out only after a block containing it has been durably reserved
//!     (temp file written, fsynced, renamed over the old file, directory fsynced).
//! C2. At start the next seq is the reserved high-water mark, so a crash skips at most one block
//!     and never repeats a value.
//! C3. `boot` is incremented and made durable before the box emits anything.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// How many seq values one durable reservation covers.
pub const SEQ_BLOCK: u64 = 1024;

/// Writes `bytes` to `path` atomically and durably: temp file, fsync, rename, fsync directory.
pub fn write_durable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn read_u64(path: &Path) -> std::io::Result<Option<u64>> {
    match fs::read_to_string(path) {
        Ok(s) => s.trim().parse::<u64>().map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not a counter ({e}): {s:?}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Hands out strictly increasing seq values that survive restarts and crashes.
#[derive(Debug)]
pub struct SeqAllocator {
    path: PathBuf,
    next: u64,
    reserved_until: u64,
}

impl SeqAllocator {
    /// Opens (or creates) the counter file `dir/seq`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join("seq");
        let mark = read_u64(&path)?.unwrap_or(1);
        Ok(SeqAllocator { path, next: mark, reserved_until: mark })
    }

    /// An allocator that persists nothing, starting at 1 (offline replay).
    pub fn ephemeral() -> Self {
        SeqAllocator { path: PathBuf::new(), next: 1, reserved_until: u64::MAX }
    }

    pub fn allocate(&mut self) -> std::io::Result<u64> {
        if self.next >= self.reserved_until {
            let until = self.next + SEQ_BLOCK;
            write_durable(&self.path, format!("{until}\n").as_bytes())?;
            self.reserved_until = until;
        }
        let s = self.next;
        self.next += 1;
        Ok(s)
    }
}

/// Increments and persists the boot counter in `dir/boot`; returns the new value (first boot: 1).
pub fn next_boot(dir: &Path) -> std::io::Result<u64> {
    fs::create_dir_all(dir)?;
    let path = dir.join("boot");
    let boot = read_u64(&path)?.unwrap_or(0) + 1;
    write_durable(&path, format!("{boot}\n").as_bytes())?;
    Ok(boot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_never_repeats_across_restarts() {
        let d = tempfile::tempdir().unwrap();
        let mut a = SeqAllocator::open(d.path()).unwrap();
        let first: Vec<u64> = (0..5).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(first, vec![1, 2, 3, 4, 5]);
        drop(a); // a crash: the rest of the block is skipped, never reused
        let mut b = SeqAllocator::open(d.path()).unwrap();
        let n = b.allocate().unwrap();
        assert_eq!(n, 1 + SEQ_BLOCK);
        for _ in 0..SEQ_BLOCK + 3 {
            let m = b.allocate().unwrap();
            assert!(m > 5);
        }
        let mut c = SeqAllocator::open(d.path()).unwrap();
        assert_eq!(c.allocate().unwrap(), 1 + 3 * SEQ_BLOCK);
    }

    #[test]
    fn boot_increments_and_corruption_is_reported() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(next_boot(d.path()).unwrap(), 1);
        assert_eq!(next_boot(d.path()).unwrap(), 2);
        std::fs::write(d.path().join("boot"), "garbage").unwrap();
        let e = next_boot(d.path()).unwrap_err().to_string();
        assert!(e.contains("boot") && e.contains("garbage"), "{e}");
    }
}
