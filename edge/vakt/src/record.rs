//! Recording: the static-masked full-resolution frames, encoded and sealed into the ring buffer
//! (`vakt-store`), with the track boxes of every detector run beside them. Its own thread and a
//! leaky queue: storage never blocks analysis or events (F7). Design:
//! `edge/docs/design/ring-buffer.md`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::json;

use vakt_core::config::Config;
use vakt_core::hardware::KeyProvider as ProfileProvider;
use vakt_core::redaction::DetectorResult;
use vakt_media::{EncodedUnit, Encoder, StaticMaskedFrame};
use vakt_store::io::{Disk, Storage};
use vakt_store::keys::{CredentialProvider, KeyProvider, RamProvider};
use vakt_store::{RecoveryReport, SegmentWriter, Store, StoreConfig};

/// The credential systemd hands the service (`LoadCredentialEncrypted=vakt-footage-key:...`).
pub const CREDENTIAL_NAME: &str = "vakt-footage-key";
/// Sweeps run this often (and at startup): an expired segment is gone within a minute (G6).
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The board profile's key provider, as built in this version.
pub fn provider(cfg: &Config) -> anyhow::Result<Box<dyn KeyProvider>> {
    let p = cfg.hardware.profile.keys.provider;
    Ok(match p {
        ProfileProvider::Ram => Box::new(RamProvider),
        ProfileProvider::Credential => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                anyhow::anyhow!(
                    "the board profile keeps footage keys in a systemd credential (keys.provider = \"credential\"), but \
                     $CREDENTIALS_DIRECTORY is not set: start vakt through its systemd unit with \
                     LoadCredentialEncrypted={CREDENTIAL_NAME}:/etc/credstore.encrypted/{CREDENTIAL_NAME} \
                     (make it once with `systemd-creds encrypt --with-key=tpm2 ...`, see the technician guide)"
                )
            })?;
            Box::new(CredentialProvider::load(&Path::new(&dir).join(CREDENTIAL_NAME))?)
        }
        ProfileProvider::Tpm2 => {
            let tcti = cfg.hardware.profile.keys.tcti();
            Box::new(vakt_store::tpm::Tpm2Provider::open(&tcti, vakt_store::tpm::DEFAULT_NV_INDEX).with_context(
                || {
                    format!(
                        "the board profile keeps the footage journal key in a TPM 2.0 (keys.provider = \"tpm2\", TCTI {tcti}), \
                         which cannot be used"
                    )
                },
            )?)
        }
        ProfileProvider::Rpmb | ProfileProvider::Otp => {
            tracing::warn!(
                provider = p.as_str(),
                "the board profile's key provider is not built in this version: footage keys are kept in RAM \
                 (key_protection \"ram\"; footage is unreadable after a power cut)"
            );
            Box::new(RamProvider)
        }
    })
}

/// The store's settings from the config: the quota defaults to 80 % of what the file system can
/// hold for recordings when the box starts.
pub fn store_config(cfg: &Config) -> anyhow::Result<StoreConfig> {
    let dir = &cfg.storage.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create storage.dir {}", dir.display()))?;
    let max_bytes = match cfg.storage.max_bytes {
        Some(b) => b,
        None => {
            let free =
                Disk.free_bytes(dir).with_context(|| format!("cannot read the free space of {}", dir.display()))?;
            let used: u64 = std::fs::read_dir(dir.join("seg"))
                .map(|r| r.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
                .unwrap_or(0);
            (free + used) / 10 * 8
        }
    };
    Ok(StoreConfig {
        dir: dir.clone(),
        box_id: cfg.box_.id.clone(),
        max_age: cfg.storage.max_age,
        max_bytes,
        epoch: Duration::from_secs(3600),
    })
}

/// Opens the store with recovery (F5); logs and audits what recovery did (recovery step 7).
pub fn open_store(cfg: &Config, actor: &str) -> anyhow::Result<(Store, RecoveryReport)> {
    let sc = store_config(cfg)?;
    let (store, report) = Store::open(sc, Arc::new(Disk), provider(cfg)?, now_ms())
        .with_context(|| format!("cannot open the recording store in {}", cfg.storage.dir.display()))?;
    let r = &report;
    tracing::info!(
        segments = r.segments,
        bytes = r.bytes,
        partial_removed = r.partial_removed,
        deletions_finished = r.deletions_finished,
        keyless_removed = r.keyless_removed,
        adopted = r.adopted,
        unverifiable_removed = r.unverifiable_removed,
        expired = r.swept.expired.len(),
        key_protection = store.key_protection(),
        "recording store recovered"
    );
    crate::open_audit(cfg)?.append(actor, "storage.recovered", serde_json::to_value(&report)?)?;
    Ok((store, report))
}

/// What the recorder is doing, for the status message.
#[derive(Debug, Clone, PartialEq)]
pub enum RecState {
    Starting,
    Recording,
    /// Only held footage is left and the disk or quota is full.
    Paused(String),
    Failed(String),
}

impl RecState {
    pub fn as_str(&self) -> &'static str {
        match self {
            RecState::Starting => "starting",
            RecState::Recording => "recording",
            RecState::Paused(_) => "paused",
            RecState::Failed(_) => "failed",
        }
    }
    /// The detail of an alarm (`storage_failed`), if the recorder cannot write.
    pub fn failure(&self) -> Option<&str> {
        match self {
            RecState::Paused(d) | RecState::Failed(d) => Some(d),
            _ => None,
        }
    }
}

#[derive(Default)]
pub struct RecCounters {
    pub segments: AtomicU64,
    pub frames: AtomicU64,
    pub dropped: AtomicU64,
    pub bytes: AtomicU64,
}

pub enum RecMsg {
    Frame(StaticMaskedFrame),
    Detections(DetectorResult),
    /// The camera signal was lost: the segment ends, the encoder restarts.
    Gap,
}

/// The handle the box keeps: a leaky sender, the state, the store (shared with the control socket).
pub struct Recorder {
    tx: Option<Sender<RecMsg>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub state: Arc<Mutex<RecState>>,
    pub counters: Arc<RecCounters>,
}

impl Recorder {
    /// `boot` numbers this start of the box: recorded track ids are made unique across restarts.
    pub fn start(cfg: &Config, store: Arc<Mutex<Store>>, boot: u64) -> anyhow::Result<Recorder> {
        let (tx, rx) = crossbeam_channel::bounded(8);
        let state = Arc::new(Mutex::new(RecState::Starting));
        let counters = Arc::new(RecCounters::default());
        let mut w = Worker {
            store,
            encoder_element: cfg.hardware.profile.gstreamer.encoder.clone(),
            segment: cfg.storage.segment,
            state: state.clone(),
            counters: counters.clone(),
            encoder: None,
            writer: None,
            pending_meta: Vec::new(),
            retry_after: None,
            last_sweep: Instant::now(),
            seg_bytes: 1024 * 1024,
            boot,
        };
        let thread = std::thread::Builder::new().name("record".into()).spawn(move || w.run(rx))?;
        Ok(Recorder { tx: Some(tx), thread: Some(thread), state, counters })
    }

    /// Never blocks: a full queue drops the frame (counted).
    pub fn send(&self, msg: RecMsg) {
        if let Some(tx) = &self.tx
            && let Err(TrySendError::Full(_)) = tx.try_send(msg)
        {
            let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(dropped = n + 1, "the recorder is behind: frames are not recorded");
            }
        }
    }

    pub fn state(&self) -> RecState {
        self.state.lock().unwrap().clone()
    }

    /// Ends the current segment cleanly and stops the thread.
    pub fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Worker {
    store: Arc<Mutex<Store>>,
    encoder_element: String,
    segment: Duration,
    state: Arc<Mutex<RecState>>,
    counters: Arc<RecCounters>,
    encoder: Option<Encoder>,
    writer: Option<SegmentWriter>,
    /// Track boxes that arrived before the first segment opened.
    pending_meta: Vec<Vec<u8>>,
    /// After a storage error: no new segment before this.
    retry_after: Option<Instant>,
    last_sweep: Instant,
    /// Room made before each segment: twice the largest segment so far.
    seg_bytes: u64,
    boot: u64,
}

/// Track ids restart at 1 at every start of the box; in recordings they are
/// `boot × 1 000 000 000 + id`, so a range that spans a restart never has one id for two people
/// (a subject-access export keeps exactly one person visible). `boot` is the events' `boot`.
pub const BOOT_TRACK_FACTOR: u64 = 1_000_000_000;

pub fn recorded_track(boot: u64, track: u64) -> u64 {
    boot.saturating_mul(BOOT_TRACK_FACTOR).saturating_add(track % BOOT_TRACK_FACTOR)
}

/// The track boxes of one detector run as stored with the footage (normalised boxes, media time).
pub fn detections_json(r: &DetectorResult, boot: u64) -> Vec<u8> {
    let objects: Vec<_> = r
        .sightings
        .iter()
        .map(|s| {
            json!({
                "track": s.track.map(|t| recorded_track(boot, t)),
                "class": s.class.as_str(),
                "box": [s.bbox[0], s.bbox[1], s.bbox[2], s.bbox[3]],
                "velocity": [s.velocity.0, s.velocity.1],
                "face_of": s.face_of.map(|of| of.map(|t| recorded_track(boot, t))),
            })
        })
        .collect();
    serde_json::to_vec(&json!({"t": r.t, "objects": objects})).expect("serialisable")
}

impl Worker {
    fn run(&mut self, rx: Receiver<RecMsg>) {
        self.set(RecState::Recording);
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(RecMsg::Frame(f)) => self.frame(f),
                Ok(RecMsg::Detections(d)) => self.meta(detections_json(&d, self.boot)),
                Ok(RecMsg::Gap) => self.end_stream(),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
            if self.last_sweep.elapsed() >= SWEEP_EVERY {
                self.last_sweep = Instant::now();
                self.sweep();
            }
        }
        self.end_stream();
    }

    fn set(&self, s: RecState) {
        let mut cur = self.state.lock().unwrap();
        if *cur != s {
            match &s {
                RecState::Recording => tracing::info!("recording"),
                RecState::Paused(d) => tracing::warn!("recording paused: {d}"),
                RecState::Failed(d) => tracing::error!("recording failed: {d}"),
                RecState::Starting => {}
            }
            *cur = s;
        }
    }

    fn sweep(&self) {
        let mut store = self.store.lock().unwrap();
        match store.sweep(now_ms()) {
            Ok(r) if !r.expired.is_empty() || !r.evicted.is_empty() => {
                tracing::info!(
                    expired = r.expired.len(),
                    evicted = r.evicted.len(),
                    epochs = r.epochs_destroyed,
                    "retention sweep"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!("retention sweep failed: {e}"),
        }
    }

    fn meta(&mut self, json: Vec<u8>) {
        match &mut self.writer {
            Some(w) => {
                if let Err(e) = w.meta(&json) {
                    self.fail(format!("{e}"));
                }
            }
            None => {
                self.pending_meta.push(json);
                // a bound: without a segment (paused), old boxes are of no use
                if self.pending_meta.len() > 64 {
                    self.pending_meta.remove(0);
                }
            }
        }
    }

    fn frame(&mut self, f: StaticMaskedFrame) {
        if self.encoder.as_ref().is_some_and(|e| e.size() != (f.width(), f.height())) {
            self.end_stream();
        }
        if self.encoder.is_none() {
            let fps = f.frame_rate().unwrap_or((15, 1));
            // a key frame every half segment: a segment ends at the first key frame after its
            // length, so it lasts one to one and a half segment lengths
            let key_interval =
                ((self.segment.as_secs_f64() / 2.0 * fps.0 as f64 / fps.1.max(1) as f64).round() as u32).max(1);
            match Encoder::start(&self.encoder_element, f.width(), f.height(), f.frame_rate(), key_interval) {
                Ok(e) => self.encoder = Some(e),
                Err(e) => return self.fail(e),
            }
        }
        let enc = self.encoder.as_mut().expect("started above");
        if let Err(e) = enc.push(&f) {
            self.encoder = None;
            return self.fail(e);
        }
        let units = enc.pull();
        for u in units {
            self.unit(u);
        }
    }

    fn unit(&mut self, u: EncodedUnit) {
        let cut = match &self.writer {
            Some(w) => u.key && (now_ms() - w.start_ms()) as u128 >= self.segment.as_millis(),
            None => u.key,
        };
        if cut {
            self.close_segment();
            if self.retry_after.is_some_and(|t| Instant::now() < t) {
                return;
            }
            self.open_segment();
        }
        let now = now_ms();
        if let Some(w) = &mut self.writer {
            match w.video(now, u.pts_ns, u.duration_ns, u.key, &u.data) {
                Ok(()) => {
                    self.counters.frames.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => self.fail(format!("{e}")),
            }
        }
    }

    fn open_segment(&mut self) {
        let mut store = self.store.lock().unwrap();
        let now = now_ms();
        match store.make_room(2 * self.seg_bytes, now).and_then(|evicted| {
            if !evicted.is_empty() {
                tracing::info!(evicted = evicted.len(), "the oldest unheld segments were deleted to make room");
            }
            store.has_room(self.seg_bytes)
        }) {
            Ok(true) => {}
            Ok(false) => {
                drop(store);
                self.retry_after = Some(Instant::now() + Duration::from_secs(5));
                return self.set(RecState::Paused(
                    "the disk or the storage quota is full and only held footage is left: recording is paused until a hold ends or room is made"
                        .into(),
                ));
            }
            Err(e) => {
                drop(store);
                return self.fail(format!("{e}"));
            }
        }
        match store.begin(now) {
            Ok(mut w) => {
                drop(store);
                for m in std::mem::take(&mut self.pending_meta) {
                    if let Err(e) = w.meta(&m) {
                        return self.fail_writer(w, format!("{e}"));
                    }
                }
                self.writer = Some(w);
            }
            Err(e) => {
                drop(store);
                self.fail(format!("{e}"));
            }
        }
    }

    fn close_segment(&mut self) {
        let Some(w) = self.writer.take() else { return };
        if w.frames() == 0 {
            self.store.lock().unwrap().abort(w);
            return;
        }
        let result = self.store.lock().unwrap().finish(w);
        match result {
            Ok(info) => {
                self.seg_bytes = self.seg_bytes.max(info.bytes);
                self.counters.segments.fetch_add(1, Ordering::Relaxed);
                self.counters.bytes.fetch_add(info.bytes, Ordering::Relaxed);
                self.retry_after = None;
                self.set(RecState::Recording);
            }
            Err(e) => {
                // the `.part` file stays until recovery or the next abort; at most this segment is lost (F4)
                self.fail(format!("{e}"));
            }
        }
    }

    fn fail_writer(&mut self, w: SegmentWriter, detail: String) {
        self.store.lock().unwrap().abort(w);
        self.fail(detail);
    }

    /// A storage or encoder error ends at most the current segment (F7); retried in 5 s.
    fn fail(&mut self, detail: String) {
        if let Some(w) = self.writer.take() {
            self.store.lock().unwrap().abort(w);
        }
        self.retry_after = Some(Instant::now() + Duration::from_secs(5));
        self.set(RecState::Failed(detail));
    }

    /// End of a stream (signal lost, size change, shutdown): drain the encoder, close the segment.
    fn end_stream(&mut self) {
        if let Some(enc) = self.encoder.take() {
            match enc.finish() {
                Ok(units) => {
                    for u in units {
                        self.unit(u);
                    }
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
        self.close_segment();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vakt_core::detect::ObjectClass;
    use vakt_core::redaction::Sighting;

    #[test]
    fn recorded_track_ids_differ_across_boots_and_faces_follow_their_person() {
        let r = DetectorResult {
            t: 1.5,
            sightings: vec![
                Sighting::object(Some(3), ObjectClass::Person, [0.1, 0.1, 0.2, 0.5], (0.0, 0.0)),
                Sighting::face(Some(3), [0.15, 0.1, 0.05, 0.05], (0.0, 0.0)),
            ],
        };
        let a: serde_json::Value = serde_json::from_slice(&detections_json(&r, 1)).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&detections_json(&r, 2)).unwrap();
        assert_eq!(a["objects"][0]["track"], 1_000_000_003u64);
        assert_eq!(b["objects"][0]["track"], 2_000_000_003u64);
        assert_eq!(a["objects"][1]["face_of"], 1_000_000_003u64);
        assert!(a["objects"][1]["track"].is_null());
    }
}
