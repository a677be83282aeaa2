//! The writer: opening (verify, recover a torn tail, lock) and durable appends; see
//! `edge/docs/design/audit.md`.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::entry::{self, Entry};
use crate::error::AuditError;
use crate::verify;

/// Where timestamps come from. Tests inject a fixed or stepping clock; the default is
/// [`OffsetDateTime::now_utc`].
pub type Clock = Box<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// An audit log open for appending. Holds an exclusive lock on the file until dropped.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    clock: Clock,
    last_seq: u64,
    last_hash: String,
    /// File length up to the end of the last entry we know to be complete.
    len: u64,
    recovered_torn_tail: bool,
    /// Set when a failed append could not be rolled back: the file may end in a partial line.
    poisoned: bool,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("last_seq", &self.last_seq)
            .field("last_hash", &self.last_hash)
            .field("len", &self.len)
            .field("recovered_torn_tail", &self.recovered_torn_tail)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log at `path` with the system clock. See [`AuditLog::open_with_clock`].
    pub fn open(path: impl AsRef<Path>) -> Result<AuditLog, AuditError> {
        Self::open_with_clock(path, Box::new(OffsetDateTime::now_utc))
    }

    /// Opens the log at `path`, creating it (mode 0600, parent directory 0700) if missing.
    ///
    /// An existing log is verified from the first line; any complete line that fails is an error and the file
    /// is left untouched. An incomplete final line (a crash mid-append) is truncated and fsynced, and
    /// [`AuditLog::recovered_torn_tail`] returns true; callers may want to record that in the log.
    pub fn open_with_clock(path: impl AsRef<Path>, clock: Clock) -> Result<AuditLog, AuditError> {
        let path = path.as_ref().to_owned();
        let io_err = |op: &'static str| {
            let path = path.clone();
            move |source: io::Error| AuditError::Io { path, op, source }
        };

        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(dir) = parent {
            create_private_dir(dir).map_err(|source| AuditError::Io {
                path: dir.to_owned(),
                op: "create directory",
                source,
            })?;
        }

        let file = match open_options(true).open(&path) {
            Ok(file) => {
                set_mode(&file, 0o600).map_err(io_err("set mode 0600"))?;
                // The new name must survive a crash too.
                sync_dir(parent.unwrap_or(Path::new("."))).map_err(io_err("fsync directory"))?;
                file
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                open_options(false).open(&path).map_err(io_err("open"))?
            }
            Err(e) => return Err(io_err("create")(e)),
        };

        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(AuditError::Locked { path: path.clone() }),
            Err(TryLockError::Error(e)) => return Err(io_err("lock")(e)),
        }

        let scan = verify::scan(&path, BufReader::new(&file))?;
        let recovered_torn_tail = scan.report.torn_tail_bytes > 0;
        if recovered_torn_tail {
            file.set_len(scan.complete_len).map_err(io_err("truncate torn final line"))?;
            file.sync_data().map_err(io_err("fsync after truncating torn final line"))?;
        }

        Ok(AuditLog {
            path,
            file,
            clock,
            last_seq: scan.report.last_seq,
            last_hash: scan.report.last_hash,
            len: scan.complete_len,
            recovered_torn_tail,
            poisoned: false,
        })
    }

    /// Appends an entry and returns it once it is on disk (`O_APPEND` write, then `fdatasync`).
    ///
    /// `actor` is who acted (`cli:root`, `box`, `installer`): non-empty, no control characters. `action` is
    /// dotted lowercase (`config.changed`): two or more non-empty segments of `a-z`, `0-9`, `_`. `details`
    /// must be a JSON object.
    ///
    /// If the write or fsync fails, the file is truncated back to its previous length; if even that fails,
    /// later appends return [`AuditError::Poisoned`] until the log is reopened.
    pub fn append(&mut self, actor: &str, action: &str, details: serde_json::Value) -> Result<Entry, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned { path: self.path.clone() });
        }
        validate_actor(actor)?;
        validate_action(action)?;
        let serde_json::Value::Object(details) = details else {
            return Err(AuditError::InvalidInput(format!(
                "details of {action:?} must be a JSON object, got {}",
                json_kind(&details)
            )));
        };
        let seq = self
            .last_seq
            .checked_add(1)
            .ok_or_else(|| AuditError::InvalidInput("seq would overflow u64".to_owned()))?;
        let at = entry::truncate_to_millis((self.clock)());
        let at_str = entry::format_at(at)
            .map_err(|e| AuditError::InvalidInput(format!("clock gave an unrepresentable time {at}: {e}")))?;
        let (entry, mut line) = entry::seal(seq, at, &at_str, actor, action, details, &self.last_hash)
            .map_err(|e| AuditError::InvalidInput(format!("details of {action:?} cannot be serialised: {e}")))?;
        line.push(b'\n');

        let written = (&self.file)
            .write_all(&line)
            .map_err(|e| ("write", e))
            .and_then(|()| self.file.sync_data().map_err(|e| ("fsync", e)));
        if let Err((op, source)) = written {
            self.roll_back();
            return Err(AuditError::Io { path: self.path.clone(), op, source });
        }

        self.len += line.len() as u64;
        self.last_seq = entry.seq;
        self.last_hash.clone_from(&entry.hash);
        Ok(entry)
    }

    /// Removes whatever a failed append left, so the next line starts on a line boundary.
    fn roll_back(&mut self) {
        let restored = self.file.set_len(self.len).and_then(|()| self.file.sync_data());
        if restored.is_err() {
            self.poisoned = true;
        }
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `seq` of the last entry; 0 for an empty log.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// `hash` of the last entry; [`crate::GENESIS_PREV`] for an empty log.
    pub fn last_hash(&self) -> &str {
        &self.last_hash
    }

    /// Whether [`AuditLog::open`] found and truncated an incomplete final line.
    pub fn recovered_torn_tail(&self) -> bool {
        self.recovered_torn_tail
    }
}

fn validate_actor(actor: &str) -> Result<(), AuditError> {
    if actor.is_empty() || actor.chars().any(char::is_control) {
        return Err(AuditError::InvalidInput(format!(
            "actor {actor:?} must be non-empty without control characters, like \"cli:root\""
        )));
    }
    Ok(())
}

fn validate_action(action: &str) -> Result<(), AuditError> {
    let segment_ok =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !action.contains('.') || !action.split('.').all(segment_ok) {
        return Err(AuditError::InvalidInput(format!(
            "action {action:?} must be dotted lowercase segments of a-z, 0-9 and _, like \"config.changed\""
        )));
    }
    Ok(())
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn open_options(create_new: bool) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).append(true).create_new(create_new);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

/// Sets the exact mode, whatever the umask.
fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (file, mode);
        Ok(())
    }
}

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist; an existing directory is left as is.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    builder.create(dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Makes renames and creations in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
