//! Vakt's recording ring buffer: encrypted segment files, an SQLite index, crypto-shredding by
//! epoch keys, and the crash-safe write, delete and recovery orders. Every step cited as
//! "writing 5" or "deleting 2" is the numbered step of `edge/docs/design/ring-buffer.md`; the
//! code follows them literally, and F1–F7 name the invariants.
//!
//! Times are wall-clock milliseconds since the Unix epoch, passed in by the caller (tests inject
//! them).

pub mod io;
pub mod keys;
pub mod segment;
pub mod tpm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::io::{Storage, WriteFile};
use crate::keys::{KeyProvider, Keyring, KeyringReport};
use crate::segment::{OpenError, Record, Sealer, Trailer};

/// No `max_age` may exceed this (G6); fixed in code, stated in the config reference.
pub const MAX_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// No hold may last longer than this after it is made (G6).
pub const MAX_HOLD: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {}: {source}", path.display())]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("the index {}: {source}", path.display())]
    Index { path: PathBuf, source: rusqlite::Error },
    #[error("{what}")]
    Key { what: String },
    #[error("segment {id}: {source}")]
    Segment { id: u64, source: OpenError },
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io { op, path: path.to_path_buf(), source }
    }
    /// The disk (or the quota) is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    pub box_id: String,
    pub max_age: Duration,
    /// Byte quota for segment files.
    pub max_bytes: u64,
    /// Length of a key epoch (1 h): segments of one epoch share an epoch key.
    pub epoch: Duration,
}

/// One index row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentInfo {
    pub id: u64,
    pub epoch: u64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub frames: u64,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hold {
    pub id: u64,
    pub from_ms: i64,
    pub to_ms: i64,
    pub until_ms: i64,
    pub requester: String,
    pub reason: String,
    pub created_ms: i64,
}

/// What recovery did at startup (F5): logged and audited as `storage.recovered`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RecoveryReport {
    pub keys: KeyringReport,
    /// `.part` files removed: the segment being written when the process or the power stopped.
    pub partial_removed: u64,
    /// Deletions that had begun (garbage rows) finished.
    pub deletions_finished: u64,
    /// Rows removed because their epoch key is gone (a RAM provider after a restart).
    pub keyless_removed: u64,
    /// Rows removed because their file is missing (outside damage).
    pub missing_files: u64,
    /// Complete files without a row, verified and listed again.
    pub adopted: u64,
    /// Files without a row that could not be verified, removed.
    pub unverifiable_removed: u64,
    /// The index failed its check and was moved aside.
    pub index_rebuilt: bool,
    pub swept: SweepReport,
    pub segments: u64,
    pub bytes: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct SweepReport {
    /// Segments deleted for age.
    pub expired: Vec<u64>,
    /// Segments deleted to keep within the quota or the free space.
    pub evicted: Vec<u64>,
    pub epochs_destroyed: usize,
    pub holds_expired: usize,
}

/// A decrypted segment.
#[derive(Debug, Clone)]
pub struct SegmentPlain {
    pub info: SegmentInfo,
    pub records: Vec<Record>,
    pub trailer: Trailer,
}

/// What `destroy_all` destroyed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct DestroyReport {
    pub segments: u64,
    pub bytes: u64,
    pub epoch_keys: usize,
    pub holds: u64,
    pub provider: Vec<String>,
}

/// A segment being written: writing steps 3 and 4. Finish it with [`Store::finish`].
pub struct SegmentWriter {
    id: u64,
    epoch: u64,
    start_ms: i64,
    end_ms: i64,
    part: PathBuf,
    file: Box<dyn WriteFile>,
    sealer: Sealer,
}

impl SegmentWriter {
    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }
    /// Bytes sealed so far.
    pub fn bytes(&self) -> u64 {
        self.sealer.bytes
    }
    pub fn frames(&self) -> u64 {
        self.sealer.frames
    }
    /// Appends one encoded picture; `now_ms` extends the segment's end.
    pub fn video(
        &mut self,
        now_ms: i64,
        pts_ns: u64,
        duration_ns: u64,
        key: bool,
        data: &[u8],
    ) -> Result<(), StoreError> {
        self.sealer.video(pts_ns, duration_ns, key, data);
        self.end_ms = self.end_ms.max(now_ms);
        self.flush_if_due()
    }
    /// Appends a metadata record (the track boxes of one detector run, as JSON).
    pub fn meta(&mut self, json: &[u8]) -> Result<(), StoreError> {
        self.sealer.meta(json);
        self.flush_if_due()
    }
    fn flush_if_due(&mut self) -> Result<(), StoreError> {
        if self.sealer.should_flush() {
            let bytes = self.sealer.take();
            self.file.append(&bytes).map_err(|e| StoreError::io("write", &self.part, e))?;
        }
        Ok(())
    }
}

pub struct Store {
    cfg: StoreConfig,
    io: Arc<dyn Storage>,
    db: Connection,
    db_path: PathBuf,
    keys: Keyring,
    provider: Box<dyn KeyProvider>,
    seg_dir: PathBuf,
    keys_dir: PathBuf,
    next_id: u64,
    /// Epochs of segments being written: their keys are in use though no row names them yet.
    writing: std::collections::BTreeMap<u64, usize>,
}

fn part_name(id: u64) -> String {
    format!("{id:016}.part")
}
fn seg_name(id: u64) -> String {
    format!("{id:016}.vseg")
}
fn parse_id(name: &str, ext: &str) -> Option<u64> {
    name.strip_suffix(ext)?.parse().ok()
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS segment (
  id INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,
  frames INTEGER NOT NULL, bytes INTEGER NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS garbage (id INTEGER PRIMARY KEY, epoch INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS hold (
  id INTEGER PRIMARY KEY AUTOINCREMENT, from_ms INTEGER NOT NULL, to_ms INTEGER NOT NULL,
  until_ms INTEGER NOT NULL, requester TEXT NOT NULL, reason TEXT NOT NULL, created_ms INTEGER NOT NULL);
";

impl Store {
    /// Opens the store and runs recovery (recovery steps 1 to 6). The caller holds the state
    /// directory's lock, logs the report and audits it (step 7) before recording.
    pub fn open(
        cfg: StoreConfig,
        io: Arc<dyn Storage>,
        provider: Box<dyn KeyProvider>,
        now_ms: i64,
    ) -> Result<(Store, RecoveryReport), StoreError> {
        if cfg.max_age > MAX_RETENTION {
            return Err(StoreError::Invalid(format!(
                "max_age {} s is over the fixed maximum of {} s",
                cfg.max_age.as_secs(),
                MAX_RETENTION.as_secs()
            )));
        }
        let seg_dir = cfg.dir.join("seg");
        let keys_dir = cfg.dir.join("keys");
        for d in [&cfg.dir, &seg_dir, &keys_dir] {
            io.create_dir_all(d).map_err(|e| StoreError::io("create", d, e))?;
        }
        let mut report = RecoveryReport::default();
        // recovery 1: the index; SQLite replays or discards its WAL
        let db_path = cfg.dir.join("index.sqlite3");
        let db = match open_index(&db_path) {
            Ok(db) => db,
            // only a failed integrity check counts as damage; any other error (permissions, a
            // full disk) is reported, and nothing is moved aside
            Err(e @ StoreError::Invalid(_)) => {
                tracing::error!(
                    "the recording index failed its check ({e}); moving it aside and rebuilding it from the segments"
                );
                for suffix in ["", "-wal", "-shm"] {
                    let p = PathBuf::from(format!("{}{suffix}", db_path.display()));
                    if p.exists() {
                        let _ = std::fs::rename(&p, format!("{}.damaged", p.display()));
                    }
                }
                report.index_rebuilt = true;
                open_index(&db_path)?
            }
            Err(e) => return Err(e),
        };
        // recovery 2: the keys
        let (keys, kr) = Keyring::load(io.as_ref(), provider.as_ref(), &keys_dir, &cfg.box_id)?;
        report.keys = kr;
        let mut store =
            Store { cfg, io, db, db_path, keys, provider, seg_dir, keys_dir, next_id: 1, writing: Default::default() };
        store.recover(&mut report, now_ms)?;
        let (n, bytes) = store.usage()?;
        report.segments = n;
        report.bytes = bytes;
        Ok((store, report))
    }

    fn recover(&mut self, report: &mut RecoveryReport, now_ms: i64) -> Result<(), StoreError> {
        let io = self.io.clone();
        // recovery 3: remove the segment that was being written
        let files = io.list(&self.seg_dir).map_err(|e| StoreError::io("list", &self.seg_dir, e))?;
        let mut max_id = 0u64;
        for (name, _) in &files {
            if let Some(id) = parse_id(name, ".part") {
                max_id = max_id.max(id);
                let p = self.seg_dir.join(name);
                io.remove(&p).map_err(|e| StoreError::io("remove", &p, e))?;
                report.partial_removed += 1;
            }
        }
        if report.partial_removed > 0 {
            io.sync_dir(&self.seg_dir).map_err(|e| StoreError::io("fsync", &self.seg_dir, e))?;
        }
        // recovery 4: finish deletions; rows without key or file go
        report.deletions_finished = self.finish_garbage()?;
        let rows = self.all_segments()?;
        let on_disk: std::collections::BTreeSet<u64> = files.iter().filter_map(|(n, _)| parse_id(n, ".vseg")).collect();
        let keyless: Vec<u64> = rows.iter().filter(|r| self.keys.get(r.epoch).is_none()).map(|r| r.id).collect();
        report.keyless_removed = keyless.len() as u64;
        self.delete_segments(&keyless)?;
        let missing: Vec<u64> = rows
            .iter()
            .filter(|r| self.keys.get(r.epoch).is_some() && !on_disk.contains(&r.id))
            .map(|r| r.id)
            .collect();
        for id in &missing {
            tracing::error!(segment = id, "a recorded segment's file is missing (outside damage); its row is removed");
        }
        report.missing_files = missing.len() as u64;
        self.delete_segments(&missing)?;
        // recovery 5: files without a row (listed again: step 4 removed some)
        let on_disk: std::collections::BTreeSet<u64> = io
            .list(&self.seg_dir)
            .map_err(|e| StoreError::io("list", &self.seg_dir, e))?
            .iter()
            .filter_map(|(n, _)| parse_id(n, ".vseg"))
            .collect();
        let listed: std::collections::BTreeSet<u64> = self.all_segments()?.iter().map(|r| r.id).collect();
        let mut unverifiable = Vec::new();
        for id in on_disk.iter().copied() {
            max_id = max_id.max(id);
            if listed.contains(&id) {
                continue;
            }
            let path = self.seg_dir.join(seg_name(id));
            let bytes = io.read(&path).map_err(|e| StoreError::io("read", &path, e))?;
            match segment::open(&bytes, &self.cfg.box_id, |e| self.keys.get(e).cloned()) {
                Ok((h, _, t)) if h.segment == id => {
                    use sha2::Digest;
                    let info = SegmentInfo {
                        id,
                        epoch: h.epoch,
                        start_ms: t.start_ms,
                        end_ms: t.end_ms,
                        frames: t.frames,
                        bytes: bytes.len() as u64,
                        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
                    };
                    self.insert_row(&info)?;
                    report.adopted += 1;
                }
                other => {
                    tracing::warn!(segment = id, why = ?other.err(), "an unlisted segment file cannot be verified; removing it");
                    unverifiable.push(id);
                }
            }
        }
        for id in &unverifiable {
            let p = self.seg_dir.join(seg_name(*id));
            io.remove(&p).map_err(|e| StoreError::io("remove", &p, e))?;
        }
        if !unverifiable.is_empty() {
            io.sync_dir(&self.seg_dir).map_err(|e| StoreError::io("fsync", &self.seg_dir, e))?;
        }
        report.unverifiable_removed = unverifiable.len() as u64;
        let db_max: Option<i64> = self
            .db
            .query_row(
                "SELECT max(m) FROM (SELECT max(id) m FROM segment UNION SELECT max(id) FROM garbage)",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.ix(e))?;
        self.next_id = max_id.max(db_max.unwrap_or(0) as u64) + 1;
        // recovery 6: unused epoch keys go, then the retention sweep
        report.swept = self.sweep(now_ms)?;
        Ok(())
    }

    fn ix(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Index { path: self.db_path.clone(), source }
    }

    pub fn key_protection(&self) -> &'static str {
        self.provider.protection()
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Changes retention at run time (a signed command or a config reload); audited by the caller.
    pub fn set_max_age(&mut self, max_age: Duration) -> Result<(), StoreError> {
        if max_age > MAX_RETENTION {
            return Err(StoreError::Invalid(format!(
                "max_age {} s is over the fixed maximum of {} s",
                max_age.as_secs(),
                MAX_RETENTION.as_secs()
            )));
        }
        self.cfg.max_age = max_age;
        Ok(())
    }

    fn epoch_of(&self, now_ms: i64) -> u64 {
        (now_ms.max(0) as u64) / (self.cfg.epoch.as_millis().max(1) as u64)
    }

    /// Writing steps 1 to 3: the epoch key, a new segment key, the `.part` file and its header.
    pub fn begin(&mut self, now_ms: i64) -> Result<SegmentWriter, StoreError> {
        let epoch = self.epoch_of(now_ms);
        let ek = self.keys.ensure(self.io.as_ref(), self.provider.as_ref(), epoch)?;
        let id = self.next_id;
        self.next_id += 1;
        let mut sealer = Sealer::new(&self.cfg.box_id, id, epoch, &ek);
        let part = self.seg_dir.join(part_name(id));
        let mut file = self.io.create_new(&part).map_err(|e| StoreError::io("create", &part, e))?;
        file.append(&sealer.take()).map_err(|e| StoreError::io("write", &part, e))?;
        *self.writing.entry(epoch).or_default() += 1;
        Ok(SegmentWriter { id, epoch, start_ms: now_ms, end_ms: now_ms, part, file, sealer })
    }

    /// Writing steps 4 to 9: trailer, fsync, rename, fsync of the directory, then the row (F1).
    pub fn finish(&mut self, w: SegmentWriter) -> Result<SegmentInfo, StoreError> {
        // until its row is committed, the segment keeps its epoch key alive through `writing`
        let epoch = w.epoch;
        let r = self.finish_steps(w);
        self.done_writing(epoch);
        r
    }

    fn done_writing(&mut self, epoch: u64) {
        if let Some(n) = self.writing.get_mut(&epoch) {
            *n -= 1;
            if *n == 0 {
                self.writing.remove(&epoch);
            }
        }
    }

    fn finish_steps(&mut self, w: SegmentWriter) -> Result<SegmentInfo, StoreError> {
        let SegmentWriter { id, epoch, start_ms, end_ms, part, mut file, sealer } = w;
        let frames = sealer.frames;
        let trailer = Trailer { start_ms, end_ms, frames, records: sealer.records };
        let (rest, sha256, bytes) = sealer.finish(&trailer);
        // 4. the last chunks
        file.append(&rest).map_err(|e| StoreError::io("write", &part, e))?;
        // 5. fsync the file
        file.sync().map_err(|e| StoreError::io("fsync", &part, e))?;
        drop(file);
        // 6. fsync the directory
        self.io.sync_dir(&self.seg_dir).map_err(|e| StoreError::io("fsync", &self.seg_dir, e))?;
        // 7. rename
        let fin = self.seg_dir.join(seg_name(id));
        self.io.rename(&part, &fin).map_err(|e| StoreError::io("rename", &part, e))?;
        // 8. fsync the directory
        self.io.sync_dir(&self.seg_dir).map_err(|e| StoreError::io("fsync", &self.seg_dir, e))?;
        // 9. the row
        let info = SegmentInfo { id, epoch, start_ms, end_ms, frames, bytes, sha256 };
        self.insert_row(&info)?;
        Ok(info)
    }

    /// Gives up a segment being written (a write failed): its `.part` file goes (F7).
    pub fn abort(&mut self, w: SegmentWriter) {
        self.done_writing(w.epoch);
        let part = w.part.clone();
        drop(w);
        if let Err(e) = self.io.remove(&part) {
            tracing::warn!("cannot remove {}: {e}", part.display());
        }
        let _ = self.io.sync_dir(&self.seg_dir);
    }

    fn insert_row(&mut self, s: &SegmentInfo) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO segment (id, epoch, start_ms, end_ms, frames, bytes, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![s.id as i64, s.epoch as i64, s.start_ms, s.end_ms, s.frames as i64, s.bytes as i64, s.sha256],
            )
            .map_err(|e| self.ix(e))?;
        Ok(())
    }

    fn rows(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<SegmentInfo>, StoreError> {
        let mut st = self.db.prepare(sql).map_err(|e| self.ix(e))?;
        let rows = st
            .query_map(p, |r| {
                Ok(SegmentInfo {
                    id: r.get::<_, i64>(0)? as u64,
                    epoch: r.get::<_, i64>(1)? as u64,
                    start_ms: r.get(2)?,
                    end_ms: r.get(3)?,
                    frames: r.get::<_, i64>(4)? as u64,
                    bytes: r.get::<_, i64>(5)? as u64,
                    sha256: r.get(6)?,
                })
            })
            .map_err(|e| self.ix(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.ix(e))
    }

    fn all_segments(&self) -> Result<Vec<SegmentInfo>, StoreError> {
        self.rows("SELECT id, epoch, start_ms, end_ms, frames, bytes, sha256 FROM segment ORDER BY id", [])
    }

    /// Segments that overlap `[from_ms, to_ms]`, oldest first.
    pub fn segments(&self, from_ms: i64, to_ms: i64) -> Result<Vec<SegmentInfo>, StoreError> {
        self.rows(
            "SELECT id, epoch, start_ms, end_ms, frames, bytes, sha256 FROM segment WHERE end_ms >= ?1 AND start_ms <= ?2 ORDER BY start_ms, id",
            params![from_ms, to_ms],
        )
    }

    /// (segments, bytes) listed in the index.
    pub fn usage(&self) -> Result<(u64, u64), StoreError> {
        self.db
            .query_row("SELECT count(*), coalesce(sum(bytes), 0) FROM segment", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.ix(e))
    }

    /// Decrypts one listed segment.
    pub fn read(&self, id: u64) -> Result<SegmentPlain, StoreError> {
        let info = self
            .rows("SELECT id, epoch, start_ms, end_ms, frames, bytes, sha256 FROM segment WHERE id = ?1", [id as i64])?
            .pop()
            .ok_or_else(|| {
                StoreError::Invalid(format!("segment {id} is not in the index (deleted or never recorded)"))
            })?;
        let path = self.seg_dir.join(seg_name(id));
        let bytes = self.io.read(&path).map_err(|e| StoreError::io("read", &path, e))?;
        let (_, records, trailer) = segment::open(&bytes, &self.cfg.box_id, |e| self.keys.get(e).cloned())
            .map_err(|source| StoreError::Segment { id, source })?;
        Ok(SegmentPlain { info, records, trailer })
    }

    // ---- deleting ----

    /// Deleting steps 1 to 5 for `ids` (a batch), then step 6.
    fn delete_segments(&mut self, ids: &[u64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        // 1. rows move to `garbage` in one transaction
        {
            let tx = self.db.transaction().map_err(|e| StoreError::Index { path: self.db_path.clone(), source: e })?;
            for id in ids {
                tx.execute(
                    "INSERT OR IGNORE INTO garbage (id, epoch) SELECT id, epoch FROM segment WHERE id = ?1",
                    [*id as i64],
                )
                .and_then(|_| tx.execute("DELETE FROM segment WHERE id = ?1", [*id as i64]))
                .map_err(|e| StoreError::Index { path: self.db_path.clone(), source: e })?;
            }
            tx.commit().map_err(|e| StoreError::Index { path: self.db_path.clone(), source: e })?;
        }
        self.finish_garbage()?;
        Ok(())
    }

    /// Deleting steps 2 to 5 for every `garbage` row (also recovery step 4).
    fn finish_garbage(&mut self) -> Result<u64, StoreError> {
        let ids: Vec<u64> = {
            let mut st = self.db.prepare("SELECT id FROM garbage ORDER BY id").map_err(|e| self.ix(e))?;
            let r = st.query_map([], |r| r.get::<_, i64>(0)).map_err(|e| self.ix(e))?;
            r.collect::<Result<Vec<_>, _>>().map_err(|e| self.ix(e))?.into_iter().map(|i| i as u64).collect()
        };
        if ids.is_empty() {
            return Ok(0);
        }
        let zeros = [0u8; keys::WRAPPED_LEN];
        let range = segment::key_range(&self.cfg.box_id);
        for id in &ids {
            let path = self.seg_dir.join(seg_name(*id));
            // 2. destroy the wrapped key in the header, fsync
            match self.io.overwrite(&path, range.start, &zeros) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io("overwrite", &path, e)),
            }
            // 3. unlink
            match self.io.remove(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove", &path, e)),
            }
        }
        // 4. fsync the directory
        self.io.sync_dir(&self.seg_dir).map_err(|e| StoreError::io("fsync", &self.seg_dir, e))?;
        // 5. the garbage rows go
        {
            let tx = self.db.transaction().map_err(|e| StoreError::Index { path: self.db_path.clone(), source: e })?;
            for id in &ids {
                tx.execute("DELETE FROM garbage WHERE id = ?1", [*id as i64])
                    .map_err(|e| StoreError::Index { path: self.db_path.clone(), source: e })?;
            }
            tx.commit().map_err(|e| StoreError::Index { path: self.db_path.clone(), source: e })?;
        }
        Ok(ids.len() as u64)
    }

    /// Deleting step 6: epoch keys of past epochs with no segment left are destroyed.
    fn destroy_unused_epochs(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        let current = self.epoch_of(now_ms);
        let mut unused = Vec::new();
        for e in self.keys.epochs() {
            if e >= current || self.writing.contains_key(&e) {
                continue;
            }
            let n: i64 = self
                .db
                .query_row(
                    "SELECT (SELECT count(*) FROM segment WHERE epoch = ?1) + (SELECT count(*) FROM garbage WHERE epoch = ?1)",
                    [e as i64],
                    |r| r.get(0),
                )
                .map_err(|e| self.ix(e))?;
            if n == 0 {
                unused.push(e);
            }
        }
        self.keys.destroy(self.io.as_ref(), self.provider.as_ref(), &unused)?;
        Ok(unused.len())
    }

    /// Whether any hold in force covers a segment.
    fn held_ids(&self, now_ms: i64) -> Result<std::collections::BTreeSet<u64>, StoreError> {
        let mut st = self
            .db
            .prepare(
                "SELECT DISTINCT s.id FROM segment s JOIN hold h ON s.end_ms >= h.from_ms AND s.start_ms <= h.to_ms WHERE h.until_ms > ?1",
            )
            .map_err(|e| self.ix(e))?;
        let r = st.query_map([now_ms], |r| r.get::<_, i64>(0)).map_err(|e| self.ix(e))?;
        Ok(r.collect::<Result<Vec<_>, _>>().map_err(|e| self.ix(e))?.into_iter().map(|i| i as u64).collect())
    }

    /// The retention sweep: expired holds end, segments older than `max_age` and not held go,
    /// then the oldest unheld ones while over the quota; unused epoch keys are destroyed.
    pub fn sweep(&mut self, now_ms: i64) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport {
            holds_expired: self
                .db
                .execute("DELETE FROM hold WHERE until_ms <= ?1", [now_ms])
                .map_err(|e| self.ix(e))?,
            ..SweepReport::default()
        };
        let held = self.held_ids(now_ms)?;
        let cutoff = now_ms - self.cfg.max_age.as_millis() as i64;
        let all = self.all_segments()?;
        report.expired = all.iter().filter(|s| s.end_ms < cutoff && !held.contains(&s.id)).map(|s| s.id).collect();
        self.delete_segments(&report.expired)?;
        report.evicted = self.evict_for(0, now_ms)?;
        report.epochs_destroyed = self.destroy_unused_epochs(now_ms)?;
        Ok(report)
    }

    /// Makes room for `need` more bytes within the quota and the free space, deleting the oldest
    /// unheld segments first. Returns the ids deleted; if only held segments are left, it stops
    /// and the caller pauses recording.
    pub fn make_room(&mut self, need: u64, now_ms: i64) -> Result<Vec<u64>, StoreError> {
        let ids = self.evict_for(need, now_ms)?;
        if !ids.is_empty() {
            self.destroy_unused_epochs(now_ms)?;
        }
        Ok(ids)
    }

    fn evict_for(&mut self, need: u64, now_ms: i64) -> Result<Vec<u64>, StoreError> {
        let held = self.held_ids(now_ms)?;
        let (_, mut used) = self.usage()?;
        let mut free = self.io.free_bytes(&self.seg_dir).map_err(|e| StoreError::io("statvfs", &self.seg_dir, e))?;
        let mut out = Vec::new();
        for s in self.all_segments()? {
            if used + need <= self.cfg.max_bytes && free >= need {
                break;
            }
            if held.contains(&s.id) {
                continue;
            }
            used = used.saturating_sub(s.bytes);
            free = free.saturating_add(s.bytes);
            out.push(s.id);
        }
        self.delete_segments(&out)?;
        Ok(out)
    }

    /// Whether `need` bytes fit now (after [`Store::make_room`]).
    pub fn has_room(&self, need: u64) -> Result<bool, StoreError> {
        let (_, used) = self.usage()?;
        let free = self.io.free_bytes(&self.seg_dir).map_err(|e| StoreError::io("statvfs", &self.seg_dir, e))?;
        Ok(used + need <= self.cfg.max_bytes && free >= need)
    }

    // ---- holds ----

    /// Checks a hold without making it: its range and its expiry (at most `MAX_HOLD` from now).
    pub fn check_hold(from_ms: i64, to_ms: i64, until_ms: i64, now_ms: i64) -> Result<(), StoreError> {
        if to_ms < from_ms {
            return Err(StoreError::Invalid(format!("the hold's end ({to_ms}) is before its start ({from_ms})")));
        }
        if until_ms > now_ms + MAX_HOLD.as_millis() as i64 {
            return Err(StoreError::Invalid(format!(
                "a hold lasts at most {} days from now",
                MAX_HOLD.as_secs() / 86_400
            )));
        }
        if until_ms <= now_ms {
            return Err(StoreError::Invalid("the hold's expiry is not in the future".into()));
        }
        Ok(())
    }

    /// Holds `[from_ms, to_ms]` until `until_ms` (at most `MAX_HOLD` from now).
    pub fn hold(
        &mut self,
        from_ms: i64,
        to_ms: i64,
        until_ms: i64,
        requester: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<Hold, StoreError> {
        Store::check_hold(from_ms, to_ms, until_ms, now_ms)?;
        self.db
            .execute(
                "INSERT INTO hold (from_ms, to_ms, until_ms, requester, reason, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![from_ms, to_ms, until_ms, requester, reason, now_ms],
            )
            .map_err(|e| self.ix(e))?;
        let id = self.db.last_insert_rowid() as u64;
        Ok(Hold {
            id,
            from_ms,
            to_ms,
            until_ms,
            requester: requester.into(),
            reason: reason.into(),
            created_ms: now_ms,
        })
    }

    pub fn release(&mut self, id: u64) -> Result<Option<Hold>, StoreError> {
        let h = self.holds_where("WHERE id = ?1", [id as i64])?.pop();
        self.db.execute("DELETE FROM hold WHERE id = ?1", [id as i64]).map_err(|e| self.ix(e))?;
        Ok(h)
    }

    /// Holds in force.
    pub fn holds(&self, now_ms: i64) -> Result<Vec<Hold>, StoreError> {
        self.holds_where("WHERE until_ms > ?1", [now_ms])
    }

    fn holds_where(&self, cond: &str, p: impl rusqlite::Params) -> Result<Vec<Hold>, StoreError> {
        let sql =
            format!("SELECT id, from_ms, to_ms, until_ms, requester, reason, created_ms FROM hold {cond} ORDER BY id");
        let mut st = self.db.prepare(&sql).map_err(|e| self.ix(e))?;
        let r = st
            .query_map(p, |r| {
                Ok(Hold {
                    id: r.get::<_, i64>(0)? as u64,
                    from_ms: r.get(1)?,
                    to_ms: r.get(2)?,
                    until_ms: r.get(3)?,
                    requester: r.get(4)?,
                    reason: r.get(5)?,
                    created_ms: r.get(6)?,
                })
            })
            .map_err(|e| self.ix(e))?;
        r.collect::<Result<Vec<_>, _>>().map_err(|e| self.ix(e))
    }

    // ---- decommission ----

    /// Crypto-erases everything: every segment (key overwritten, file removed), every epoch key
    /// and journal, the holds, the provider's secret where it can, and the index files.
    pub fn destroy_all(mut self) -> Result<DestroyReport, StoreError> {
        let (segments, bytes) = self.usage()?;
        let holds: i64 = self.db.query_row("SELECT count(*) FROM hold", [], |r| r.get(0)).map_err(|e| self.ix(e))?;
        let ids: Vec<u64> = self.all_segments()?.iter().map(|s| s.id).collect();
        self.delete_segments(&ids)?;
        // anything left on disk that is not listed (there should be none after recovery)
        for (name, _) in self.io.list(&self.seg_dir).map_err(|e| StoreError::io("list", &self.seg_dir, e))? {
            let p = self.seg_dir.join(&name);
            self.io.remove(&p).map_err(|e| StoreError::io("remove", &p, e))?;
        }
        self.io.sync_dir(&self.seg_dir).map_err(|e| StoreError::io("fsync", &self.seg_dir, e))?;
        let epoch_keys = self.keys.destroy_all(self.io.as_ref())?;
        let _ = &self.keys_dir;
        let provider = self.provider.destroy();
        let Store { db, db_path, .. } = self;
        drop(db);
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", db_path.display()));
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("remove", &p, e)),
            }
        }
        Ok(DestroyReport { segments, bytes, epoch_keys, holds: holds as u64, provider })
    }
}

fn open_index(path: &Path) -> Result<Connection, StoreError> {
    let ix = |source| StoreError::Index { path: path.to_path_buf(), source };
    let db = Connection::open(path).map_err(ix)?;
    // WAL with synchronous=FULL: a committed transaction survives a power cut (with NORMAL, WAL
    // mode may lose the last ones); secure_delete shrinks what free pages keep
    db.pragma_update(None, "journal_mode", "WAL").map_err(ix)?;
    db.pragma_update(None, "synchronous", "FULL").map_err(ix)?;
    db.pragma_update(None, "secure_delete", "ON").map_err(ix)?;
    let check: String = db.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(ix)?;
    if check != "ok" {
        return Err(StoreError::Invalid(format!("PRAGMA quick_check: {check}")));
    }
    db.execute_batch(SCHEMA).map_err(ix)?;
    let _: Option<i64> = db.query_row("SELECT 1", [], |r| r.get(0)).optional().map_err(ix)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(db)
}
