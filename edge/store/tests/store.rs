//! The ring buffer's guarantees on a real disk and on a simulated power cut: retention with an
//! injected clock, crypto-shredding, recovery after power cuts at random instants (F3, F4), disk
//! full, holds, and the syscall order of writing and deleting against the design doc.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vakt_store::io::{Disk, SimDisk, Storage};
use vakt_store::keys::{CredentialProvider, KeyProvider, RamProvider};
use vakt_store::segment::{self, Record};
use vakt_store::{Store, StoreConfig};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const T0: i64 = 1_790_000_000_000; // 2026-09-21

fn cfg(dir: &Path) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        box_id: "box-1".into(),
        max_age: Duration::from_secs(3600),
        max_bytes: 1 << 40,
        epoch: Duration::from_secs(3600),
    }
}

fn credential(dir: &Path) -> Box<dyn KeyProvider> {
    let p = dir.join("footage-key");
    if !p.exists() {
        std::fs::write(&p, hex::encode(vakt_store::keys::random_bytes::<32>())).unwrap();
    }
    Box::new(CredentialProvider::load(&p).unwrap())
}

/// A frame's bytes: recognisable plaintext, with an H.264 start code.
fn frame(i: u64) -> Vec<u8> {
    let mut f = b"\x00\x00\x00\x01\x65PLAINFRAME".to_vec();
    f.extend_from_slice(&i.to_le_bytes());
    f.resize(2000, 0xab);
    f
}

/// Records one segment of `frames` frames from `start` to `start + len`.
fn record(store: &mut Store, start: i64, len: i64, frames: u64) -> Result<u64, vakt_store::StoreError> {
    let mut w = store.begin(start)?;
    for i in 0..frames {
        let t = start + len * i as i64 / frames.max(1) as i64;
        w.video(t, i * 66_666_667, 66_666_667, i == 0, &frame(i))?;
        if i % 5 == 0 {
            w.meta(format!(r#"{{"t":{i},"objects":[{{"track":3}}]}}"#).as_bytes())?;
        }
    }
    let mut w = w;
    w.video(start + len, frames * 66_666_667, 66_666_667, false, &frame(frames))?;
    Ok(store.finish(w)?.id)
}

fn listed(store: &Store) -> Vec<u64> {
    store.segments(i64::MIN, i64::MAX).unwrap().iter().map(|s| s.id).collect()
}

#[test]
fn nothing_older_than_max_age_survives_a_sweep_or_a_restart_after_the_deadline() {
    let t = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let io: Arc<dyn Storage> = Arc::new(Disk);
    let (mut store, _) = Store::open(cfg(t.path()), io.clone(), credential(keys.path()), T0).unwrap();
    for k in 0..6 {
        record(&mut store, T0 + k * 20 * MIN, 20 * MIN - 1000, 4).unwrap();
    }
    assert_eq!(listed(&store).len(), 6);
    let now = T0 + 2 * HOUR + 5 * MIN;
    let r = store.sweep(now).unwrap();
    let left = store.segments(i64::MIN, i64::MAX).unwrap();
    assert!(left.iter().all(|s| s.end_ms >= now - HOUR), "{left:?}");
    assert_eq!(r.expired.len(), 3, "segments ending before 01:05 go: {r:?}");
    assert!(r.epochs_destroyed >= 1, "the first hour's key goes with its last segment: {r:?}");
    drop(store);

    // the box is off past every deadline: recovery deletes at startup
    let later = T0 + 5 * HOUR;
    let (store, report) = Store::open(cfg(t.path()), io.clone(), credential(keys.path()), later).unwrap();
    assert_eq!(report.swept.expired.len(), 3, "{report:?}");
    assert!(listed(&store).is_empty());
    let files = std::fs::read_dir(t.path().join("seg")).unwrap().count();
    assert_eq!(files, 0, "expired files are gone from disk");
}

/// A segment begun in one epoch and finished in the next: a sweep in between must not destroy
/// the key it was sealed with (no row names that epoch yet).
#[test]
fn a_segment_written_across_an_epoch_boundary_stays_readable() {
    let t = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(cfg(t.path()), Arc::new(Disk), credential(keys.path()), T0).unwrap();
    let start = (T0 / HOUR + 1) * HOUR - 2000; // two seconds before an epoch ends
    let mut w = store.begin(start).unwrap();
    w.video(start, 0, 66_666_667, true, &frame(0)).unwrap();
    let r = store.sweep(start + 5000).unwrap();
    assert_eq!(r.epochs_destroyed, 0, "{r:?}");
    w.video(start + 5000, 66_666_667, 66_666_667, false, &frame(1)).unwrap();
    let id = store.finish(w).unwrap().id;
    store.sweep(start + 6000).unwrap();
    let plain = store.read(id).unwrap();
    assert_eq!(plain.trailer.frames, 2);
}

#[test]
fn a_hold_keeps_its_range_past_retention_until_it_expires() {
    let t = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(cfg(t.path()), Arc::new(Disk), credential(keys.path()), T0).unwrap();
    let a = record(&mut store, T0, 10 * MIN, 3).unwrap();
    let b = record(&mut store, T0 + 10 * MIN, 10 * MIN, 3).unwrap();
    let h =
        store.hold(T0 + 12 * MIN, T0 + 13 * MIN, T0 + 4 * HOUR, "police:4711", "case 2026/123", T0 + 15 * MIN).unwrap();
    store.sweep(T0 + 3 * HOUR).unwrap();
    assert_eq!(listed(&store), vec![b], "the held segment stays, the other expires");
    assert!(store.hold(T0, T0, T0 + 40 * 24 * HOUR, "x", "y", T0).is_err(), "holds are bounded by MAX_HOLD");
    assert!(listed(&store).contains(&b) && !listed(&store).contains(&a));
    assert_eq!(store.holds(T0 + 3 * HOUR).unwrap(), vec![h]);
    let r = store.sweep(T0 + 4 * HOUR + 1).unwrap();
    assert_eq!((r.holds_expired, r.expired.clone()), (1, vec![b]));
}

#[test]
fn without_the_providers_secret_no_segment_decrypts_and_no_file_holds_plaintext() {
    let t = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let io: Arc<dyn Storage> = Arc::new(Disk);
    let (mut store, _) = Store::open(cfg(t.path()), io.clone(), credential(keys.path()), T0).unwrap();
    let ids: Vec<u64> = (0..3).map(|k| record(&mut store, T0 + k * MIN, MIN - 1, 5).unwrap()).collect();
    // the box itself reads its footage
    let plain = store.read(ids[1]).unwrap();
    assert!(matches!(&plain.records[0], Record::Video { data, .. } if data == &frame(0)));
    drop(store);

    // every file the store wrote: no MP4 box, no H.264 start code, no known frame bytes
    let mut files = Vec::new();
    for sub in ["seg", "keys"] {
        for e in std::fs::read_dir(t.path().join(sub)).unwrap() {
            files.push(std::fs::read(e.unwrap().path()).unwrap());
        }
    }
    files.push(std::fs::read(t.path().join("index.sqlite3")).unwrap());
    for f in &files {
        for needle in [&b"ftyp"[..], b"moof", b"\x00\x00\x00\x01\x65", b"PLAINFRAME"] {
            assert!(!f.windows(needle.len()).any(|w| w == needle), "plaintext {needle:?} on disk");
        }
    }

    // the card in another machine: the whole state directory copied, the secret not
    let copy = tempfile::tempdir().unwrap();
    copy_dir(t.path(), copy.path());
    let mut opened = 0;
    for e in std::fs::read_dir(copy.path().join("seg")).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        let other = vakt_store::keys::random_key();
        if segment::open(&bytes, "box-1", |_| Some(other.clone())).is_ok() {
            opened += 1;
        }
    }
    assert_eq!(opened, 0);
    let other_keys = tempfile::tempdir().unwrap();
    let (store, report) = Store::open(cfg(copy.path()), io.clone(), credential(other_keys.path()), T0 + MIN).unwrap();
    assert!(report.keys.unreadable, "{report:?}");
    assert_eq!((report.keyless_removed, listed(&store).len()), (3, 0));
    drop(store);
    let (store, report) = Store::open(cfg(t.path()), io, Box::new(RamProvider), T0 + MIN).unwrap();
    assert_eq!(
        (report.keyless_removed, listed(&store).len()),
        (3, 0),
        "a RAM provider after a restart: nothing readable"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// One power cut at a random instant of a workload (record, sweep, hold), then recovery: no row
/// without its file, no file without its row, no `.part` left, every listed segment decrypts
/// (F3); every segment committed before the cut is still there unless a sweep was deleting it (F4).
fn power_cut_once(seed: u64) {
    let t = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let sim = SimDisk::new();
    let io: Arc<dyn Storage> = Arc::new(sim.clone());
    let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut c = cfg(t.path());
    c.max_age = Duration::from_secs(30 * 60);
    c.epoch = Duration::from_secs(10 * 60);
    let (mut store, _) = Store::open(c.clone(), io.clone(), credential(keys.path()), T0).unwrap();
    let start_ops = sim.ops();
    // a first pass without a crash measures the workload's length
    let crash_at = 1 + next() % 400;
    sim.crash_after(crash_at);
    let mut committed = BTreeSet::new();
    let mut deletable = BTreeSet::new();
    let mut now = T0;
    for k in 0..40u64 {
        now += 2 * MIN;
        match record(&mut store, now, 2 * MIN - 1, 1 + next() % 6) {
            Ok(id) => {
                committed.insert(id);
            }
            Err(_) => break,
        }
        if k % 4 == 3 {
            // what this sweep may delete: everything that ended before the cutoff
            for s in store.segments(i64::MIN, now - 30 * MIN).unwrap() {
                deletable.insert(s.id);
            }
            if store.sweep(now).is_err() {
                break;
            }
        }
    }
    let crashed = sim.crashed();
    drop(store);
    sim.power_cut();
    let (store, report) = Store::open(c, io.clone(), credential(keys.path()), now).unwrap();
    let rows: BTreeSet<u64> = listed(&store).into_iter().collect();
    let files: BTreeSet<u64> = sim
        .list(&t.path().join("seg"))
        .unwrap()
        .iter()
        .map(|(n, _)| {
            assert!(n.ends_with(".vseg"), "seed {seed}: {n} left after recovery");
            n.trim_end_matches(".vseg").parse().unwrap()
        })
        .collect();
    assert_eq!(rows, files, "seed {seed}: rows and files differ after recovery ({report:?})");
    for id in &rows {
        store.read(*id).unwrap_or_else(|e| panic!("seed {seed}: listed segment {id} does not decrypt: {e}"));
    }
    // F4: what was committed and not being deleted, and not expired by now, is still there
    let expired_by_recovery: BTreeSet<u64> = report.swept.expired.iter().copied().collect();
    for id in committed.difference(&deletable) {
        assert!(
            rows.contains(id) || expired_by_recovery.contains(id),
            "seed {seed}: committed segment {id} lost (crash after {crash_at} ops of {}; crashed {crashed}) {report:?}",
            sim.ops() - start_ops
        );
    }
}

#[test]
fn power_cuts_at_random_instants_keep_the_index_and_files_in_step() {
    let n: u64 = std::env::var("VAKT_POWER_CUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    for seed in 1..=n {
        power_cut_once(seed);
    }
}

#[test]
fn a_full_disk_evicts_the_oldest_unheld_segments_first() {
    let t = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    // room for about six segments of ~12 KB
    let sim = SimDisk::with_capacity(80_000);
    let io: Arc<dyn Storage> = Arc::new(sim.clone());
    let (mut store, _) = Store::open(cfg(t.path()), io, credential(keys.path()), T0).unwrap();
    let first = record(&mut store, T0, MIN, 5).unwrap();
    let second = record(&mut store, T0 + MIN, MIN, 5).unwrap();
    store.hold(T0, T0 + MIN / 2, T0 + HOUR, "police:1", "case", T0 + 2 * MIN).unwrap();
    let mut evicted = Vec::new();
    let mut failures = 0;
    for k in 2..20 {
        let now = T0 + k * MIN;
        evicted.extend(store.make_room(20_000, now).unwrap());
        match record(&mut store, now, MIN, 5) {
            Ok(_) => {}
            Err(e) => {
                assert!(e.is_no_space(), "{e}");
                failures += 1;
            }
        }
        assert!(sim.all_files().iter().all(|(p, _)| !p.to_string_lossy().ends_with(".part")) || failures > 0);
    }
    assert_eq!(failures, 0, "making room first means no write fails");
    assert_eq!(evicted.first(), Some(&second), "the oldest unheld segment goes first: {evicted:?}");
    assert!(listed(&store).contains(&first), "the held segment stays");
    assert!(!evicted.contains(&first));
    let (_, used) = store.usage().unwrap();
    assert!(used <= 80_000);
}

/// Strace's view of the real store: writing and deleting follow the numbered steps.
#[test]
fn the_syscall_order_follows_the_design() {
    if std::env::var_os("VAKT_STRACE_CHILD").is_some() {
        return strace_child();
    }
    let strace = which("strace").expect("strace is installed by deploy/setup-dev.sh");
    let t = tempfile::tempdir().unwrap();
    let log = t.path().join("trace");
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(strace)
        .args(["-f", "-y", "-qq", "-o"])
        .arg(&log)
        .args(["-e", "trace=openat,write,pwrite64,fsync,fdatasync,rename,renameat,renameat2,unlink,unlinkat"])
        .arg(&exe)
        .args(["--exact", "the_syscall_order_follows_the_design", "--nocapture", "--test-threads=1"])
        .env("VAKT_STRACE_CHILD", t.path().join("store"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let trace = std::fs::read_to_string(&log).unwrap();
    let seg = t.path().join("store/seg");
    let seg = seg.to_string_lossy();
    // the events on the segment and its directory, in order
    let mut steps = Vec::new();
    for line in trace.lines() {
        let call = line.split_once(' ').map(|(_, c)| c.trim_start()).unwrap_or(line);
        let name = call.split('(').next().unwrap_or("");
        let on_part = call.contains(".part");
        let on_vseg = call.contains(".vseg");
        let on_dir = call.contains(&format!("<{seg}>"));
        let on_index = call.contains("index.sqlite3");
        let step = match name {
            "openat" if on_part && call.contains("O_EXCL") => "create .part",
            "write" if on_part => "write .part",
            "fsync" if on_part => "fsync .part",
            "fsync" if on_dir => "fsync seg/",
            "rename" | "renameat" | "renameat2" if on_part && on_vseg => "rename .part .vseg",
            "pwrite64" if on_vseg => "overwrite key",
            "fsync" if on_vseg => "fsync .vseg",
            "unlink" | "unlinkat" if on_vseg => "unlink .vseg",
            // WAL mode, synchronous=FULL: a commit ends with an fsync of the WAL
            "fsync" | "fdatasync" if on_index && call.contains("index.sqlite3-wal") => "index commit",
            _ => continue,
        };
        // a segment is written in many writes: one step
        if !(step == "write .part" && steps.last() == Some(&step)) {
            steps.push(step);
        }
    }
    let text = steps.join("\n");
    let writing = [
        "create .part",
        "write .part",
        "fsync .part",
        "fsync seg/",
        "rename .part .vseg",
        "fsync seg/",
        "index commit",
    ];
    let deleting = ["index commit", "overwrite key", "fsync .vseg", "unlink .vseg", "fsync seg/", "index commit"];
    let expected = [&writing[..], &deleting[..]].concat().join("\n");
    assert!(text.contains(&expected), "syscall order:\n{text}\n\nexpected in it:\n{expected}\n\nfull trace:\n{trace}");
}

fn strace_child() {
    let dir = PathBuf::from(std::env::var_os("VAKT_STRACE_CHILD").unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    let (mut store, _) = Store::open(cfg(&dir), Arc::new(Disk), Box::new(RamProvider), T0).unwrap();
    record(&mut store, T0, MIN, 3).unwrap();
    store.sweep(T0 + 3 * HOUR).unwrap();
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(cmd)).find(|p| p.is_file())
}
