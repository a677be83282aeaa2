//! One audit entry: its fields, its timestamp format, its canonical bytes and hash; see
//! `edge/docs/design/audit.md` and the crate docs for the exact format.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::error::Corruption;

/// `prev` of the first entry: 64 zeros.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const AT_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// One line of the log, as written and as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: u64,
    /// UTC, millisecond precision.
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub details: serde_json::Map<String, serde_json::Value>,
    /// The previous entry's `hash`, or [`GENESIS_PREV`].
    pub prev: String,
    /// Lowercase hex SHA-256 of the entry's canonical bytes (see the crate docs).
    pub hash: String,
}

/// The hashed fields, in order. Serialising this with `serde_json::to_vec` gives the canonical bytes.
#[derive(Serialize)]
struct HashedFields<'a> {
    seq: u64,
    at: &'a str,
    actor: &'a str,
    action: &'a str,
    details: &'a serde_json::Map<String, serde_json::Value>,
    prev: &'a str,
}

/// A line as parsed, before its fields are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    seq: u64,
    at: String,
    actor: String,
    action: String,
    details: serde_json::Map<String, serde_json::Value>,
    prev: String,
    hash: String,
}

/// Formats `at` as stored: `2026-11-22T17:13:30.123Z`. `at` must already be UTC.
pub(crate) fn format_at(at: OffsetDateTime) -> Result<String, time::error::Format> {
    at.format(AT_FORMAT)
}

fn parse_at(s: &str) -> Option<OffsetDateTime> {
    PrimitiveDateTime::parse(s, AT_FORMAT).ok().map(PrimitiveDateTime::assume_utc)
}

/// Converts to UTC and drops everything below a millisecond, so the value round-trips through the file.
pub(crate) fn truncate_to_millis(at: OffsetDateTime) -> OffsetDateTime {
    let at = at.to_offset(UtcOffset::UTC);
    // The nanosecond field is below one second, so milliseconds are below 1000 and always valid.
    at.replace_millisecond(at.millisecond()).unwrap_or(at)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Builds a new entry and its line (without the trailing `\n`).
pub(crate) fn seal(
    seq: u64,
    at: OffsetDateTime,
    at_str: &str,
    actor: &str,
    action: &str,
    details: serde_json::Map<String, serde_json::Value>,
    prev: &str,
) -> Result<(Entry, Vec<u8>), serde_json::Error> {
    let mut line = serde_json::to_vec(&HashedFields { seq, at: at_str, actor, action, details: &details, prev })?;
    let hash = sha256_hex(&line);
    // Replace the closing brace with the hash field, so the line is the canonical bytes plus `hash`:
    // exactly what `serde_json::to_vec` of the whole entry would give.
    line.pop();
    line.extend_from_slice(b",\"hash\":\"");
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}");
    let entry =
        Entry { seq, at, actor: actor.to_owned(), action: action.to_owned(), details, prev: prev.to_owned(), hash };
    Ok((entry, line))
}

/// Why a complete line is not a valid entry, before chain checks.
pub(crate) enum LineError {
    NotJson(serde_json::Error),
    Corrupt { seq: Option<u64>, reason: Corruption },
}

/// Parses one complete line (without `\n`) and checks everything that does not depend on its neighbours:
/// shape, timestamp, canonical form and hash.
pub(crate) fn parse_line(line: &[u8]) -> Result<Entry, LineError> {
    if line.is_empty() {
        return Err(LineError::Corrupt { seq: None, reason: Corruption::EmptyLine });
    }
    let raw: RawEntry = serde_json::from_slice(line).map_err(LineError::NotJson)?;
    let seq = Some(raw.seq);
    let corrupt = |reason| LineError::Corrupt { seq, reason };

    let at = parse_at(&raw.at).ok_or_else(|| corrupt(Corruption::BadTimestamp { value: raw.at.clone() }))?;
    let hash_is_hex = raw.hash.len() == 64 && raw.hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hash_is_hex {
        return Err(corrupt(Corruption::NotCanonical));
    }
    // Hash the bytes as stored: the line minus `,"hash":"…"` before its final `}`.
    let suffix_len = ",\"hash\":\"\"}".len() + 64;
    let Some(body_len) = line.len().checked_sub(suffix_len) else {
        return Err(corrupt(Corruption::NotCanonical));
    };
    let (body, suffix) = line.split_at(body_len);
    let expected_suffix = format!(",\"hash\":\"{}\"}}", raw.hash);
    if suffix != expected_suffix.as_bytes() {
        return Err(corrupt(Corruption::NotCanonical));
    }
    let mut hasher = Sha256::new();
    hasher.update(body);
    hasher.update(b"}");
    if hex::encode(hasher.finalize()) != raw.hash {
        return Err(corrupt(Corruption::HashMismatch));
    }

    Ok(Entry {
        seq: raw.seq,
        at,
        actor: raw.actor,
        action: raw.action,
        details: raw.details,
        prev: raw.prev,
        hash: raw.hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn details() -> serde_json::Map<String, serde_json::Value> {
        match serde_json::json!({"zone": "door", "threshold": 0.35, "list": [1, 2]}) {
            serde_json::Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn at_format_is_millis_and_z() {
        let at = truncate_to_millis(datetime!(2026-11-22 18:13:30.123456789 +01:00));
        assert_eq!(format_at(at).unwrap(), "2026-11-22T17:13:30.123Z");
        assert_eq!(parse_at("2026-11-22T17:13:30.123Z"), Some(at));
        assert_eq!(parse_at("2026-11-22T17:13:30Z"), None);
        assert_eq!(parse_at("2026-11-22T17:13:30.123+00:00"), None);
    }

    #[test]
    fn line_is_serde_serialisation_of_all_fields_in_order() {
        let at = datetime!(2026-11-22 17:13:30.123 UTC);
        let (entry, line) =
            seal(1, at, "2026-11-22T17:13:30.123Z", "box", "box.started", details(), GENESIS_PREV).unwrap();
        let all = serde_json::json!({
            "seq": 1, "at": "2026-11-22T17:13:30.123Z", "actor": "box", "action": "box.started",
            "details": details(), "prev": GENESIS_PREV, "hash": entry.hash,
        });
        // Key order: serde_json's map may sort, so compare parsed values and check the order by position.
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&line).unwrap(), all);
        let text = std::str::from_utf8(&line).unwrap();
        let positions: Vec<usize> =
            ["\"seq\"", "\"at\"", "\"actor\"", "\"action\"", "\"details\"", "\"prev\"", "\"hash\""]
                .iter()
                .map(|k| text.find(k).unwrap())
                .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");

        let hashed = serde_json::to_vec(&HashedFields {
            seq: 1,
            at: "2026-11-22T17:13:30.123Z",
            actor: "box",
            action: "box.started",
            details: &details(),
            prev: GENESIS_PREV,
        })
        .unwrap();
        assert_eq!(entry.hash, sha256_hex(&hashed));
        assert_eq!(parse_line(&line).ok(), Some(entry));
    }

    #[test]
    fn reformatted_line_is_not_canonical() {
        let at = datetime!(2026-11-22 17:13:30.123 UTC);
        let (_, line) = seal(1, at, "2026-11-22T17:13:30.123Z", "box", "box.started", details(), GENESIS_PREV).unwrap();
        let pretty = serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(&line).unwrap()).unwrap();
        assert!(matches!(parse_line(&pretty), Err(LineError::Corrupt { reason: Corruption::NotCanonical, .. })));
    }
}
