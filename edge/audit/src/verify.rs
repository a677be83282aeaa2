//! Walking a log file and checking its chain (seq continuity, prev links, hashes), shared by [`verify`] and
//! [`crate::AuditLog::open`]; see `edge/docs/design/audit.md`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::entry::{self, Entry, GENESIS_PREV, LineError};
use crate::error::{AuditError, Corruption};

/// What [`verify`] found in a log whose complete lines all verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of complete entries.
    pub entries: u64,
    /// `seq` of the last entry; 0 for an empty log.
    pub last_seq: u64,
    /// `hash` of the last entry; [`GENESIS_PREV`] for an empty log.
    pub last_hash: String,
    /// `at` of the first entry, if any.
    pub first_at: Option<OffsetDateTime>,
    /// `at` of the last entry, if any.
    pub last_at: Option<OffsetDateTime>,
    /// Bytes after the last `\n`: an append that a crash (or a writer still at work) left unfinished. Not an
    /// error, since no append returned for them; [`crate::AuditLog::open`] truncates them. Only a prefix of the
    /// next entry (or zero fill) counts; other trailing bytes are [`Corruption::ForeignTail`].
    pub torn_tail_bytes: u64,
}

/// Reads the log at `path` and checks every complete line: it is an entry, its hash matches its bytes,
/// its seq follows the previous one and its `prev` is the previous entry's hash. Read-only.
///
/// An incomplete final line that starts like the next entry is reported in [`VerifyReport::torn_tail_bytes`],
/// not as an error.
pub fn verify(path: impl AsRef<Path>) -> Result<VerifyReport, AuditError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| AuditError::Io { path: path.to_owned(), op: "open", source })?;
    Ok(scan(path, BufReader::new(file))?.report)
}

/// The result of walking a log.
pub(crate) struct Scan {
    pub(crate) report: VerifyReport,
    /// Length of the file up to and including the last complete line.
    pub(crate) complete_len: u64,
}

/// Checks each line against the one before it.
struct Chain {
    path: PathBuf,
    line_no: u64,
    report: VerifyReport,
}

impl Chain {
    fn new(path: &Path) -> Self {
        Chain {
            path: path.to_owned(),
            line_no: 0,
            report: VerifyReport {
                entries: 0,
                last_seq: 0,
                last_hash: GENESIS_PREV.to_owned(),
                first_at: None,
                last_at: None,
                torn_tail_bytes: 0,
            },
        }
    }

    fn corrupt(&self, seq: Option<u64>, reason: Corruption) -> AuditError {
        AuditError::Corrupt { path: self.path.clone(), line: self.line_no, seq, reason }
    }

    fn push(&mut self, line: &[u8]) -> Result<(), AuditError> {
        self.line_no += 1;
        let entry: Entry = entry::parse_line(line).map_err(|e| match e {
            LineError::NotJson(source) => AuditError::NotJson { path: self.path.clone(), line: self.line_no, source },
            LineError::Corrupt { seq, reason } => self.corrupt(seq, reason),
        })?;
        let seq = Some(entry.seq);
        let r = &self.report;
        if r.entries == 0 && entry.seq != 1 {
            return Err(self.corrupt(seq, Corruption::FirstSeq { found: entry.seq }));
        }
        if r.entries > 0 && Some(entry.seq) != r.last_seq.checked_add(1) {
            return Err(self.corrupt(seq, Corruption::SeqGap { previous: r.last_seq, found: entry.seq }));
        }
        if entry.prev != r.last_hash {
            return Err(
                self.corrupt(seq, Corruption::PrevMismatch { expected: r.last_hash.clone(), found: entry.prev })
            );
        }
        let r = &mut self.report;
        r.entries += 1;
        r.last_seq = entry.seq;
        r.last_hash = entry.hash;
        r.first_at.get_or_insert(entry.at);
        r.last_at = Some(entry.at);
        Ok(())
    }

    /// Accepts an incomplete final line only if it could be what a crash mid-append leaves: a prefix of the
    /// next entry (`{"seq":<next>,…`), possibly zero-filled by the file system. Anything else is not ours,
    /// and truncating it would destroy evidence (or a file that is not an audit log at all).
    fn check_torn_tail(&mut self, tail: &[u8]) -> Result<(), AuditError> {
        let next = self.report.last_seq.saturating_add(1);
        let start = format!("{{\"seq\":{next},");
        let start = start.as_bytes();
        let zero_filled = !tail.is_empty() && tail.iter().all(|&b| b == 0);
        let plausible = zero_filled || tail.starts_with(start) || start.starts_with(tail);
        if plausible {
            return Ok(());
        }
        self.line_no += 1;
        Err(self.corrupt(None, Corruption::ForeignTail { next_seq: next }))
    }
}

/// Walks `reader` (the whole file from offset 0).
pub(crate) fn scan(path: &Path, mut reader: impl BufRead) -> Result<Scan, AuditError> {
    let mut chain = Chain::new(path);
    let mut complete_len = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|source| AuditError::Io {
            path: path.to_owned(),
            op: "read",
            source,
        })?;
        if n == 0 {
            break;
        }
        match buf.strip_suffix(b"\n") {
            Some(line) => {
                chain.push(line)?;
                complete_len += n as u64;
            }
            None => {
                // Only possible at end of file: read_until stops early only there.
                chain.check_torn_tail(&buf)?;
                chain.report.torn_tail_bytes = n as u64;
                break;
            }
        }
    }
    Ok(Scan { report: chain.report, complete_len })
}
