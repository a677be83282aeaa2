//! Append-only, hash-chained audit log of who changed what on the box; the format and its invariants are
//! explained in `edge/docs/design/audit.md`.
//!
//! # File format
//!
//! A log is a JSON-lines file: one [`Entry`] per line, each line terminated by `\n`. Fields appear in this
//! order:
//!
//! | field     | meaning                                                                              |
//! |-----------|--------------------------------------------------------------------------------------|
//! | `seq`     | `u64`, 1 for the first entry, then consecutive                                       |
//! | `at`      | RFC 3339 UTC with exactly three fractional digits and `Z`: `2026-11-22T17:13:30.123Z`  |
//! | `actor`   | who acted: `cli:root`, `box`, `installer`                                            |
//! | `action`  | what happened, dotted lowercase: `config.changed`, `box.provisioned`                 |
//! | `details` | a JSON object                                                                        |
//! | `prev`    | the previous entry's `hash`; for seq 1, 64 zeros ([`GENESIS_PREV`])                  |
//! | `hash`    | lowercase hex SHA-256 of the entry without `hash` (below)                            |
//!
//! # The hash
//!
//! `hash = hex(sha256(serde_json::to_vec(&HashedFields { seq, at, actor, action, details, prev })))`, where
//! `HashedFields` is a struct with exactly those six fields in that order and `at` is the string above.
//! `serde_json::to_vec` writes compact JSON (no whitespace), so the canonical bytes are the line itself
//! with the trailing `,"hash":"<64 hex>"` removed: a line is
//! `{"seq":…,"at":…,"actor":…,"action":…,"details":{…},"prev":"…","hash":"…"}`.
//! [`verify`] hashes exactly those bytes of the line as stored, rather than re-serialising the parsed
//! value, so the check does not depend on how a JSON library round-trips floats or orders object keys.
//! An independent verifier can do the same: strip `,"hash":"<64 hex>"` before the final `}` and hash
//! the rest.
//!
//! # Invariants
//!
//! 1. An entry that [`AuditLog::append`] returned has been written with `O_APPEND` and `fdatasync`ed.
//! 2. Every complete line (ending in `\n`) verifies; a complete line that does not is tampering and
//!    [`AuditLog::open`] refuses the log rather than repair it.
//! 3. Only the final line may be incomplete (a crash mid-write), and only as a prefix of the next entry
//!    (`{"seq":<next>,…`) or zero fill left by the file system. `open` truncates it, fsyncs, and says so
//!    through [`AuditLog::recovered_torn_tail`]; that entry was never acknowledged to a caller. Any other
//!    trailing bytes are refused like a bad line.
//! 4. One writer at a time: `open` takes an exclusive advisory lock on the file for the life of the
//!    [`AuditLog`].
//!
//! # Caveat
//!
//! The chain is not keyed. It detects edits, removals and reordering by someone who does not rewrite
//! every later entry; to detect a full rewrite, anchor the last hash somewhere the box cannot change
//! (a signed `audit.verified` entry published off the box).

mod entry;
mod error;
mod log;
mod verify;

pub use entry::{Entry, GENESIS_PREV};
pub use error::{AuditError, Corruption};
pub use log::{AuditLog, Clock};
pub use verify::{VerifyReport, verify};
