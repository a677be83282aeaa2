//! The durable outbox (edge/docs/design/delivery.md): every message for the events topic is
//! committed to SQLite (`synchronous=FULL`, WAL) before it counts, and removed only after the
//! broker's PUBACK for it. The MQTT link (`mqtt.rs`) maps PUBACKs back to outbox rows.
//!
//! Bounded by bytes and age. On overflow the lowest class goes first (O4): ordinary events, then
//! alarms; within a class the oldest first. The `seq` values dropped are recorded in the same
//! transaction (table `dropped`), so the fact of a loss survives a power cut too; the box reports
//! them in an `events_dropped` event once the broker is reachable, and that report clears them,
//! again in one transaction. Reports are not counted against the bound and never dropped.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

/// Which messages an overflow drops first (lowest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Ordinary = 0,
    Alarm = 1,
    Report = 2,
}

/// One queued message.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub seq: u64,
    pub payload: Vec<u8>,
    /// None: the events topic. Else the full topic (the ONVIF dialect's messages).
    pub topic: Option<String>,
    pub retain: bool,
}

/// A message to commit: an event (`topic` None), or a message that goes with one on another
/// topic (the ONVIF dialect), which the bounds may drop without a report.
#[derive(Debug, Clone)]
pub struct Msg {
    pub seq: u64,
    pub class: Class,
    pub payload: Vec<u8>,
    pub topic: Option<String>,
    pub retain: bool,
}

/// What a bound dropped: inclusive `seq` ranges, ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dropped {
    pub ranges: Vec<(u64, u64)>,
    pub count: u64,
    /// `outbox_full` or `too_old`
    pub reason: &'static str,
}

/// How many messages one application of the bounds dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Drops {
    pub full: u64,
    pub old: u64,
}

impl Drops {
    pub fn total(&self) -> u64 {
        self.full + self.old
    }
}

/// Depth for health and shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Depth {
    pub messages: u64,
    pub bytes: u64,
    /// When the oldest queued message was committed (ms since the epoch).
    pub oldest_ms: Option<i64>,
}

pub struct Outbox {
    db: Connection,
    path: PathBuf,
    max_bytes: u64,
    max_age_ms: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("outbox {path}: {what}: {source}")]
pub struct OutboxError {
    path: String,
    what: &'static str,
    #[source]
    source: rusqlite::Error,
}

impl Outbox {
    pub const FILE: &'static str = "outbox.sqlite3";

    /// Opens (or creates) `dir/outbox.sqlite3`. Messages left by an earlier run stay queued.
    pub fn open(dir: &Path, max_bytes: u64, max_age: std::time::Duration) -> Result<Outbox, OutboxError> {
        let path = dir.join(Self::FILE);
        let e = |what| {
            let path = path.display().to_string();
            move |source| OutboxError { path, what, source }
        };
        let db = Connection::open(&path).map_err(e("cannot open"))?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS msg (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 seq INTEGER NOT NULL,
                 class INTEGER NOT NULL,
                 at_ms INTEGER NOT NULL,
                 payload BLOB NOT NULL
             );
             CREATE INDEX IF NOT EXISTS msg_class ON msg (class, id);
             CREATE TABLE IF NOT EXISTS dropped (seq INTEGER NOT NULL, reason TEXT NOT NULL);",
        )
        .map_err(e("cannot set up"))?;
        // the ONVIF dialect's columns (added after the first version of the file)
        let has_topic: bool = db
            .query_row("SELECT count(*) FROM pragma_table_info('msg') WHERE name = 'topic'", [], |r| r.get::<_, i64>(0))
            .map_err(e("cannot set up"))?
            > 0;
        if !has_topic {
            db.execute_batch(
                "ALTER TABLE msg ADD COLUMN topic TEXT;
                 ALTER TABLE msg ADD COLUMN retain INTEGER NOT NULL DEFAULT 0;",
            )
            .map_err(e("cannot add the topic column"))?;
        }
        Ok(Outbox { db, path, max_bytes, max_age_ms: max_age.as_millis() as i64 })
    }

    fn err(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> OutboxError + '_ {
        move |source| OutboxError { path: self.path.display().to_string(), what, source }
    }

    /// Commits `msgs` (seq, class, payload) in one transaction (durable when this returns), then
    /// applies the bounds. Returns what the bounds dropped.
    pub fn append(&mut self, msgs: &[(u64, Class, Vec<u8>)], now_ms: i64) -> Result<Drops, OutboxError> {
        let msgs: Vec<Msg> = msgs
            .iter()
            .map(|(seq, class, payload)| Msg {
                seq: *seq,
                class: *class,
                payload: payload.clone(),
                topic: None,
                retain: false,
            })
            .collect();
        self.append_msgs(&msgs, now_ms)
    }

    /// `append` for messages that may go to other topics.
    pub fn append_msgs(&mut self, msgs: &[Msg], now_ms: i64) -> Result<Drops, OutboxError> {
        if !msgs.is_empty() {
            self.insert(msgs, now_ms, false)?;
        }
        self.enforce(now_ms)
    }

    /// Inserts rows; with `clear_dropped` also forgets the recorded drops (a report of them is
    /// among the rows), all in one transaction.
    fn insert(&mut self, msgs: &[Msg], now_ms: i64, clear_dropped: bool) -> Result<(), OutboxError> {
        let path = self.path.display().to_string();
        let e = |what: &'static str| {
            let path = path.clone();
            move |source| OutboxError { path, what, source }
        };
        let tx = self.db.transaction().map_err(e("cannot begin"))?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO msg (seq, class, at_ms, payload, topic, retain) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(e("insert"))?;
            for m in msgs {
                ins.execute(params![m.seq as i64, m.class as i64, now_ms, m.payload, m.topic, m.retain])
                    .map_err(e("insert"))?;
            }
        }
        if clear_dropped {
            tx.execute("DELETE FROM dropped", []).map_err(e("clear dropped"))?;
        }
        tx.commit().map_err(e("cannot commit"))
    }

    /// Commits the `events_dropped` reports (seq, payload) and forgets the drops they report.
    pub fn append_reports(&mut self, reports: &[(u64, Vec<u8>)], now_ms: i64) -> Result<(), OutboxError> {
        let rows: Vec<_> = reports
            .iter()
            .map(|(s, p)| Msg { seq: *s, class: Class::Report, payload: p.clone(), topic: None, retain: false })
            .collect();
        self.insert(&rows, now_ms, true)
    }

    /// Drops messages older than the age bound, then the lowest class, oldest first, until the
    /// payload bytes of events fit; records what it dropped. Returns what it dropped.
    pub fn enforce(&mut self, now_ms: i64) -> Result<Drops, OutboxError> {
        let report = Class::Report as i64;
        // (id, seq, reason, is an event): only events are recorded as dropped
        let mut victims: Vec<(i64, i64, &'static str, bool)> = Vec::new();
        {
            let mut q = self
                .db
                .prepare_cached("SELECT id, seq, topic IS NULL FROM msg WHERE at_ms < ?1 AND class < ?2 ORDER BY id")
                .map_err(self.err("select old"))?;
            let rows = q
                .query_map(params![now_ms - self.max_age_ms, report], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(self.err("select old"))?;
            for r in rows {
                let (id, seq, event) = r.map_err(self.err("select old"))?;
                victims.push((id, seq, "too_old", event));
            }
        }
        let (mut bytes,): (i64,) = self
            .db
            .query_row("SELECT coalesce(sum(length(payload)), 0) FROM msg WHERE class < ?1", [report], |r| {
                Ok((r.get(0)?,))
            })
            .map_err(self.err("count"))?;
        if bytes as u64 > self.max_bytes {
            let mut q = self
                .db
                .prepare_cached(
                    "SELECT id, seq, length(payload), topic IS NULL FROM msg WHERE class < ?1 ORDER BY class, id",
                )
                .map_err(self.err("select victims"))?;
            let rows = q
                .query_map([report], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, bool>(3)?))
                })
                .map_err(self.err("select victims"))?;
            for r in rows {
                let (id, seq, len, event) = r.map_err(self.err("select victims"))?;
                if bytes as u64 <= self.max_bytes {
                    break;
                }
                bytes -= len;
                if !victims.iter().any(|v| v.0 == id) {
                    victims.push((id, seq, "outbox_full", event));
                }
            }
        }
        if victims.is_empty() {
            return Ok(Drops::default());
        }
        let path = self.path.display().to_string();
        let e = |what: &'static str| {
            let path = path.clone();
            move |source| OutboxError { path, what, source }
        };
        let tx = self.db.transaction().map_err(e("cannot begin"))?;
        {
            let mut del = tx.prepare_cached("DELETE FROM msg WHERE id = ?1").map_err(e("delete"))?;
            let mut rec =
                tx.prepare_cached("INSERT INTO dropped (seq, reason) VALUES (?1, ?2)").map_err(e("record"))?;
            for (id, seq, reason, event) in &victims {
                del.execute([id]).map_err(e("delete"))?;
                if *event {
                    rec.execute(params![seq, reason]).map_err(e("record"))?;
                }
            }
        }
        tx.commit().map_err(e("cannot commit"))?;
        let events: Vec<_> = victims.iter().filter(|v| v.3).collect();
        let old = events.iter().filter(|v| v.2 == "too_old").count() as u64;
        Ok(Drops { full: events.len() as u64 - old, old })
    }

    /// The drops recorded and not yet reported, one entry per reason.
    pub fn pending_drops(&self) -> Result<Vec<Dropped>, OutboxError> {
        let mut q = self
            .db
            .prepare_cached("SELECT DISTINCT reason, seq FROM dropped ORDER BY reason, seq")
            .map_err(self.err("select dropped"))?;
        let rows: Vec<(String, i64)> = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.err("select dropped"))?
            .collect::<Result<_, _>>()
            .map_err(self.err("select dropped"))?;
        let mut out = Vec::new();
        for reason in ["outbox_full", "too_old"] {
            let seqs: Vec<u64> = rows.iter().filter(|r| r.0 == reason).map(|r| r.1 as u64).collect();
            if !seqs.is_empty() {
                out.push(Dropped { ranges: ranges(&seqs), count: seqs.len() as u64, reason });
            }
        }
        Ok(out)
    }

    /// Removes the rows with these ids in one transaction (acknowledged by the broker).
    pub fn remove(&mut self, ids: impl IntoIterator<Item = i64>) -> Result<(), OutboxError> {
        let path = self.path.display().to_string();
        let e = |what: &'static str| {
            let path = path.clone();
            move |source| OutboxError { path, what, source }
        };
        let tx = self.db.transaction().map_err(e("cannot begin"))?;
        {
            let mut del = tx.prepare_cached("DELETE FROM msg WHERE id = ?1").map_err(e("delete"))?;
            for id in ids {
                del.execute([id]).map_err(e("delete"))?;
            }
        }
        tx.commit().map_err(e("cannot commit"))
    }

    /// Up to `limit` queued messages with ids above `after`, in commit order.
    pub fn after(&self, after: i64, limit: usize) -> Result<Vec<Row>, OutboxError> {
        let mut q = self
            .db
            .prepare_cached("SELECT id, seq, payload, topic, retain FROM msg WHERE id > ?1 ORDER BY id LIMIT ?2")
            .map_err(self.err("select"))?;
        q.query_map(params![after, limit as i64], |r| {
            Ok(Row {
                id: r.get(0)?,
                seq: r.get::<_, i64>(1)? as u64,
                payload: r.get(2)?,
                topic: r.get(3)?,
                retain: r.get(4)?,
            })
        })
        .map_err(self.err("select"))?
        .collect::<Result<_, _>>()
        .map_err(self.err("select"))
    }

    /// Every queued message, in commit order (decommission exports them).
    pub fn all(&self) -> Result<Vec<Row>, OutboxError> {
        self.after(0, i64::MAX as usize)
    }

    pub fn depth(&self) -> Result<Depth, OutboxError> {
        let (messages, bytes): (i64, i64) = self
            .db
            .query_row("SELECT count(*), coalesce(sum(length(payload)), 0) FROM msg", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(self.err("count"))?;
        let oldest_ms = self
            .db
            .query_row("SELECT min(at_ms) FROM msg", [], |r| r.get::<_, Option<i64>>(0))
            .optional()
            .map_err(self.err("count"))?
            .flatten();
        Ok(Depth { messages: messages as u64, bytes: bytes as u64, oldest_ms })
    }
}

/// `vakt bench-outbox`: commit throughput with fsync, and drain throughput (read + delete after
/// PUBACK, 256 rows per transaction as the sender's wake-ups batch them at most).
pub fn bench(dir: &Path, count: u64, batch: usize) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(dir)?;
    let _ = std::fs::remove_file(dir.join(Outbox::FILE));
    let mut ob = Outbox::open(dir, u64::MAX / 2, std::time::Duration::from_secs(30 * 24 * 3600))?;
    let payload = vec![b'x'; 600];
    let t = std::time::Instant::now();
    let mut seq = 1u64;
    while seq <= count {
        let n = (batch as u64).min(count - seq + 1);
        let rows: Vec<_> = (seq..seq + n).map(|s| (s, Class::Ordinary, payload.clone())).collect();
        ob.append(&rows, 0)?;
        seq += n;
    }
    let commit_s = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    loop {
        let rows = ob.after(0, 256)?;
        if rows.is_empty() {
            break;
        }
        ob.remove(rows.iter().map(|r| r.id))?;
    }
    let drain_s = t.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "count": count,
        "batch": batch,
        "commit_events_per_s": (count as f64 / commit_s).round(),
        "commit_ms_per_transaction": (commit_s * 1000.0 / (count as f64 / batch as f64)) ,
        "drain_events_per_s": (count as f64 / drain_s).round(),
    }))
}

/// Sorted, distinct values as inclusive ranges: [1, 2, 3, 7] → [(1, 3), (7, 7)].
pub fn ranges(sorted: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &s in sorted {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == s => *last = s,
            _ => out.push((s, s)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_join_consecutive_values() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), vec![(1, 3), (7, 7), (9, 10)]);
        assert_eq!(ranges(&[]), vec![]);
    }

    #[test]
    fn overflow_drops_ordinary_before_alarms_and_records_what_it_dropped() {
        let d = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(d.path(), 1000, std::time::Duration::from_secs(3600)).unwrap();
        let p = vec![0u8; 100];
        let mut msgs: Vec<(u64, Class, Vec<u8>)> = Vec::new();
        for s in 1..=6 {
            msgs.push((s, Class::Ordinary, p.clone()));
        }
        for s in 7..=10 {
            msgs.push((s, Class::Alarm, p.clone()));
        }
        assert_eq!(o.append(&msgs, 0).unwrap().total(), 0, "1000 bytes fit exactly");
        assert_eq!(o.append(&[(11, Class::Alarm, vec![0u8; 250])], 1).unwrap(), Drops { full: 3, old: 0 });
        assert_eq!(o.pending_drops().unwrap(), vec![Dropped { ranges: vec![(1, 3)], count: 3, reason: "outbox_full" }]);
        // a report is not counted against the bound and clears what it reports
        o.append_reports(&[(12, vec![0u8; 900])], 2).unwrap();
        assert!(o.pending_drops().unwrap().is_empty());
        assert_eq!(
            o.append(&[(13, Class::Ordinary, vec![0u8; 700])], 3).unwrap().full,
            4,
            "every ordinary one, alarms stay"
        );
        assert_eq!(o.pending_drops().unwrap()[0].ranges, vec![(4, 6), (13, 13)]);
        let left: Vec<u64> = o.after(0, 100).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(left, vec![7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn old_messages_go_and_survive_a_reopen_otherwise() {
        let d = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(d.path(), 1 << 20, std::time::Duration::from_secs(60)).unwrap();
        o.append(&[(1, Class::Alarm, b"a".to_vec()), (2, Class::Ordinary, b"b".to_vec())], 0).unwrap();
        o.append(&[(3, Class::Ordinary, b"c".to_vec())], 30_000).unwrap();
        drop(o);
        let mut o = Outbox::open(d.path(), 1 << 20, std::time::Duration::from_secs(60)).unwrap();
        assert_eq!(o.depth().unwrap().messages, 3);
        assert_eq!(o.enforce(61_000).unwrap(), Drops { full: 0, old: 2 });
        drop(o);
        let mut o = Outbox::open(d.path(), 1 << 20, std::time::Duration::from_secs(60)).unwrap();
        assert_eq!(
            o.pending_drops().unwrap(),
            vec![Dropped { ranges: vec![(1, 2)], count: 2, reason: "too_old" }],
            "recorded drops survive a restart"
        );
        let rows = o.after(0, 10).unwrap();
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
        o.remove([rows[0].id]).unwrap();
        assert_eq!(o.depth().unwrap(), Depth { messages: 0, bytes: 0, oldest_ms: None });
    }
}
