//! Errors of the audit log: I/O, lines that are not entries, and broken chains; see
//! `edge/docs/design/audit.md`.

use std::fmt;
use std::path::PathBuf;

/// Why opening, verifying or appending to an audit log failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The file system refused; `op` says what we were doing.
    #[error("audit log {}: {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A complete line is not JSON, or not an entry (missing, extra or mistyped fields).
    #[error("audit log {}: line {line}: not an audit entry: {source}", path.display())]
    NotJson {
        path: PathBuf,
        line: u64,
        #[source]
        source: serde_json::Error,
    },

    /// A complete line parsed as an entry but breaks the chain: the log was modified.
    #[error("audit log {}: line {line}{}: {reason}", path.display(), SeqSuffix(*seq, reason))]
    Corrupt {
        path: PathBuf,
        line: u64,
        /// The entry's `seq`, when the line parsed far enough to have one. Not repeated in the message when
        /// `reason` is about the seq itself.
        seq: Option<u64>,
        reason: Corruption,
    },

    /// Another [`crate::AuditLog`] (in this or another process) holds the log open for writing.
    #[error(
        "audit log {} is open for writing elsewhere (another vakt process?): only one writer may append",
        path.display()
    )]
    Locked { path: PathBuf },

    /// [`crate::AuditLog::append`] was called with something that cannot be an entry.
    #[error("audit entry rejected: {0}")]
    InvalidInput(String),

    /// An earlier append failed and the file could not be restored to its last good length; reopen the log
    /// (which verifies it and recovers a torn tail) before appending again.
    #[error(
        "audit log {}: an earlier append failed and could not be rolled back; reopen the log",
        path.display()
    )]
    Poisoned { path: PathBuf },
}

/// Which check a complete line failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// The line is empty.
    EmptyLine,
    /// The first entry does not have seq 1: the start of the log is missing.
    FirstSeq { found: u64 },
    /// `seq` is not one more than the previous entry's.
    SeqGap { previous: u64, found: u64 },
    /// `prev` is not the previous entry's `hash`.
    PrevMismatch { expected: String, found: String },
    /// `hash` does not match the line's contents.
    HashMismatch,
    /// The line does not end in `,"hash":"<64 lowercase hex>"}`, so it was not written by this crate.
    NotCanonical,
    /// The file ends in an incomplete line that is not the start of the next entry, so it is not a write
    /// interrupted by a crash.
    ForeignTail { next_seq: u64 },
    /// `at` is not `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    BadTimestamp { value: String },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::EmptyLine => f.write_str("empty line"),
            Corruption::FirstSeq { found } => {
                write!(f, "first entry has seq {found}, expected 1: the start of the log was removed")
            }
            Corruption::SeqGap { previous, found } if *found > previous.saturating_add(1) => write!(
                f,
                "seq {found} follows {previous}: an entry was removed (expected seq {})",
                previous.saturating_add(1)
            ),
            Corruption::SeqGap { previous, found } => write!(
                f,
                "seq {found} follows {previous}: entries were reordered or duplicated (expected seq {})",
                previous.saturating_add(1)
            ),
            Corruption::PrevMismatch { expected, found } => {
                write!(f, "prev {found} is not the previous entry's hash {expected}: the chain is broken")
            }
            Corruption::HashMismatch => f.write_str("hash mismatch: entry was modified"),
            Corruption::NotCanonical => f.write_str(
                "line is not in canonical form (compact JSON ending in the \"hash\" field): entry was modified",
            ),
            Corruption::ForeignTail { next_seq } => write!(
                f,
                "incomplete final line is not the start of entry {next_seq}, so not an interrupted append: \
                 something else wrote to the log"
            ),
            Corruption::BadTimestamp { value } => {
                write!(f, "\"at\" is {value:?}, expected UTC with milliseconds like 2026-11-22T17:13:30.123Z")
            }
        }
    }
}

struct SeqSuffix<'a>(Option<u64>, &'a Corruption);

impl fmt::Display for SeqSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (_, Corruption::FirstSeq { .. } | Corruption::SeqGap { .. }) | (None, _) => Ok(()),
            (Some(seq), _) => write!(f, " (seq {seq})"),
        }
    }
}
