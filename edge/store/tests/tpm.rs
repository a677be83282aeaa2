//! The `tpm2` key provider against a software TPM 2.0 (swtpm, the same TPM code a hardware TPM's
//! firmware is tested with), driven through tpm2-tools as on a board.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vakt_store::io::{Disk, Storage};
use vakt_store::keys::RamProvider;
use vakt_store::tpm::{DEFAULT_NV_INDEX, SoftTpm, Tpm2Provider};
use vakt_store::{Store, StoreConfig};

const T0: i64 = 1_790_000_000_000;
const MIN: i64 = 60_000;

fn cfg(dir: &Path) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        box_id: "box-1".into(),
        max_age: Duration::from_secs(3600),
        max_bytes: 1 << 40,
        epoch: Duration::from_secs(3600),
    }
}

fn record(store: &mut Store, start: i64) -> u64 {
    let mut w = store.begin(start).unwrap();
    for i in 0..5u64 {
        w.video(start + i as i64 * 1000, i * 1_000_000_000, 1_000_000_000, i == 0, b"\x00\x00\x00\x01\x65PLAINFRAME")
            .unwrap();
    }
    store.finish(w).unwrap().id
}

fn count(store: &Store) -> usize {
    store.segments(i64::MIN, i64::MAX).unwrap().len()
}

#[test]
fn footage_survives_a_restart_with_the_tpm_and_nothing_opens_without_it_or_after_destroy() {
    let tpm_state = tempfile::tempdir().unwrap();
    let tpm = SoftTpm::start(tpm_state.path());
    let dir = tempfile::tempdir().unwrap();
    let io: Arc<dyn Storage> = Arc::new(Disk);

    let p = Tpm2Provider::open(&tpm.tcti, DEFAULT_NV_INDEX).unwrap();
    assert!(p.created, "a fresh TPM gets its key on first use");
    let (mut store, _) = Store::open(cfg(dir.path()), io.clone(), Box::new(p), T0).unwrap();
    assert_eq!(store.key_protection(), "tpm2");
    let ids: Vec<u64> = (0..3).map(|k| record(&mut store, T0 + k * MIN)).collect();
    drop(store);

    // a restart (or a power cut): the same TPM gives the same key, and the footage reads
    let p = Tpm2Provider::open(&tpm.tcti, DEFAULT_NV_INDEX).unwrap();
    assert!(!p.created);
    let (store, report) = Store::open(cfg(dir.path()), io.clone(), Box::new(p), T0 + 4 * MIN).unwrap();
    assert_eq!((report.keyless_removed, count(&store)), (0, 3), "{report:?}");
    assert!(store.read(ids[2]).is_ok());
    drop(store);

    // the card in another box: another TPM makes its own key, which opens no journal
    let other_state = tempfile::tempdir().unwrap();
    let other = SoftTpm::start(other_state.path());
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let p = Tpm2Provider::open(&other.tcti, DEFAULT_NV_INDEX).unwrap();
    let (store, report) = Store::open(cfg(copy.path()), io.clone(), Box::new(p), T0 + 4 * MIN).unwrap();
    assert!(report.keys.unreadable, "{report:?}");
    assert_eq!(count(&store), 0);
    drop(store);

    // destroy (decommission): the NV index is undefined; journals copied before stay closed
    let copy2 = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy2.path());
    let p = Tpm2Provider::open(&tpm.tcti, DEFAULT_NV_INDEX).unwrap();
    let (store, _) = Store::open(cfg(dir.path()), io.clone(), Box::new(p), T0 + 4 * MIN).unwrap();
    let destroyed = store.destroy_all().unwrap();
    assert!(
        destroyed.provider.iter().any(|l| l.contains("undefined") && !l.starts_with("NOT")),
        "{:?}",
        destroyed.provider
    );
    let p = Tpm2Provider::open(&tpm.tcti, DEFAULT_NV_INDEX).unwrap();
    assert!(p.created, "after destroy the TPM has no key left: a new one is made");
    let (store, report) = Store::open(cfg(copy2.path()), io.clone(), Box::new(p), T0 + 4 * MIN).unwrap();
    assert!(report.keys.unreadable, "{report:?}");
    assert_eq!(count(&store), 0, "a copy taken before the destroy opens nothing with the same TPM");
    drop(store);

    // a RAM provider on the TPM box's card reads nothing either
    let (store, _) = Store::open(cfg(copy.path()), io, Box::new(RamProvider), T0 + 5 * MIN).unwrap();
    assert_eq!(count(&store), 0);
}

#[test]
fn an_unreachable_tpm_is_an_error_naming_the_tcti() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let e = Tpm2Provider::open(&tcti, DEFAULT_NV_INDEX).err().expect("no TPM there").to_string();
    assert!(e.contains("tpm2_getcap") && e.contains(&tcti), "{e}");
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}
