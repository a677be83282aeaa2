//! `vakt run`: the live box. Tasks: capture (GStreamer threads), analysis (its own thread,
//! OpenCV), the MQTT link (tokio), health. One cancellation token reaches all of them; shutdown
//! happens in a fixed order (design `edge/docs/design/events.md`, "Shutdown").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use vakt_core::clock::SystemClock;
use vakt_core::config::Config;
use vakt_core::counters::{SeqAllocator, next_boot};
use vakt_core::event::{Event, rfc3339};
use vakt_media::{Capture, CaptureConfig, CaptureMsg, Pacing, Recovery};

use crate::analysis::{Analyzer, EventFactory, Origin};
use crate::mqtt::Mqtt;
use crate::{audit_config_change, broker};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Health figures written by the analysis thread.
#[derive(Default)]
struct AnalysisStats {
    frames: AtomicU64,
    detector_runs: AtomicU64,
    detector_failures: AtomicU64,
    /// Capture messages handled (frames and signal changes): the watchdog's analysis progress.
    handled: AtomicU64,
    /// Events that could not be committed to the outbox (lost; a gap in `seq`).
    events_unstored: AtomicU64,
    /// Events the outbox's bounds dropped (reported in `events_dropped` messages).
    events_dropped: AtomicU64,
}

/// Options of `vakt run` beyond the config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub print_events: bool,
    /// Fault injection (tests): analysis stops once the media time passes this.
    pub fault_stall_analysis_after: Option<f64>,
    /// Fault injection (tests): every detector run sleeps this long first.
    pub fault_detector_delay: Duration,
    /// Fault injection (tests): detector runs after the first N fail.
    pub fault_detector_fail_after: Option<u64>,
    /// Fault injection (tests): the clock-jump check sees +1 h after this many seconds.
    pub fault_clock_jump_after: Option<u64>,
}

/// What the status reports beyond the config: alarms open now, and commissioning.
#[derive(Debug, Clone, Default, PartialEq)]
struct Condition {
    alarms: Vec<&'static str>,
    commissioned: bool,
    /// The recorder's state (`off` when `storage.record = false`).
    recorder: &'static str,
    key_protection: &'static str,
}

/// The retained status. `since` is when this boot of the box started; `condition` is `degraded`
/// while any alarm (tamper, signal lost) is open.
fn status(cfg: &Config, state: &str, boot: u64, since: &str, c: &Condition) -> Vec<u8> {
    let condition = match state {
        // the last will is fixed when the box connects: it cannot know the alarms when it fires
        "offline" => "unknown",
        _ if c.alarms.is_empty() => "ok",
        _ => "degraded",
    };
    json!({
        "state": state,
        "condition": condition,
        "alarms": c.alarms,
        "commissioned": c.commissioned,
        "version": VERSION,
        "box": cfg.box_.id,
        "site": cfg.box_.site,
        "camera": cfg.source.camera,
        "board": cfg.hardware.profile.name,
        "boot": boot,
        "since": since,
        "config_digest": cfg.digest,
        "detection": cfg.detect.enabled.then_some(&cfg.detect.model),
        "recording": cfg.storage.record,
        "recorder": c.recorder,
        "key_protection": c.key_protection,
        "retention_s": cfg.storage.max_age.as_secs(),
        "retention": humantime::format_duration(cfg.storage.max_age).to_string(),
        "warnings": if cfg.mqtt.insecure_plaintext {
            vec!["insecure_plaintext: MQTT without TLS, events cross the network unencrypted and unauthenticated"]
        } else {
            Vec::new()
        },
        "at": rfc3339(time::OffsetDateTime::now_utc()),
    })
    .to_string()
    .into_bytes()
}

/// Holds an exclusive lock on `state_dir/lock` for the life of the process: two boxes on one
/// state directory would hand out the same seq values (C1).
pub(crate) fn lock_state_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.try_lock().map_err(|_| {
        anyhow::anyhow!("another vakt process is using the state directory {} (lock {})", dir.display(), path.display())
    })?;
    Ok(f)
}

pub async fn run(cfg: Config, opts: RunOptions) -> anyhow::Result<()> {
    let print_events = opts.print_events;
    let notifier = crate::notify::Notifier::from_env();
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());

    let state_dir = &cfg.box_.state_dir;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    // a signed `relearn` asked for a new tamper reference: learned now, before the box takes the
    // camera, as `vakt commission --force` would (the old reference stays if this fails)
    let relearn = state_dir.join(crate::commands::RELEARN_MARKER);
    if relearn.exists() {
        tracing::warn!("a signed command asked to re-learn the scene reference: learning it now");
        // removed first: a start that is killed while learning must not learn again and again
        std::fs::remove_file(&relearn).with_context(|| format!("cannot remove {}", relearn.display()))?;
        if let Err(e) = crate::commission::commission(&cfg, true) {
            tracing::error!("re-learning the scene reference failed; the previous one stays: {e:#}");
            crate::open_audit(&cfg)?.append("box", "tamper.relearn_failed", json!({"error": format!("{e:#}")}))?;
        }
    }
    // a CLI command that opened the store of a stopped box (export, hold) holds the lock for
    // seconds: wait for it rather than fail the start
    let _lock = {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            match lock_state_dir(state_dir) {
                Ok(l) => break l,
                Err(e) if Instant::now() < until => {
                    tracing::info!("{e:#}; waiting");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    };
    audit_config_change(&cfg, "box")?;
    let boot =
        next_boot(state_dir).with_context(|| format!("cannot update the boot counter in {}", state_dir.display()))?;
    let seq = SeqAllocator::open(state_dir)
        .with_context(|| format!("cannot open the seq counter in {}", state_dir.display()))?;
    // The store is opened (and recovered, F5) at every start, recording or not: footage recorded
    // before `record` was switched off still expires, and holds and exports still work.
    let (store, _) = crate::record::open_store(&cfg, "box")?;
    let key_protection = store.key_protection();
    let store = Arc::new(std::sync::Mutex::new(store));
    let control =
        crate::control::serve(crate::control::Service { store: store.clone(), cfg: cfg.clone(), actor: "box" })?;
    tracing::info!(socket = %control.display(), "control socket ready");
    let mut recorder =
        if cfg.storage.record { Some(crate::record::Recorder::start(&cfg, store.clone(), boot)?) } else { None };
    if !cfg.storage.record {
        // nothing records, but expired footage must still go within a minute (G6)
        let (store, stop) = (store.clone(), cancel.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::record::SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = every.tick() => {
                        if let Err(e) = store.lock().unwrap().sweep(crate::record::now_ms()) {
                            tracing::error!("retention sweep failed: {e}");
                        }
                    }
                }
            }
        });
    }
    let rec_state = recorder.as_ref().map(|r| (r.state.clone(), r.counters.clone()));
    let since = rfc3339(time::OffsetDateTime::now_utc());
    // The enclosure switch is opened before anything connects, so a wrong line fails fast.
    let housing_input = match &cfg.tamper.housing {
        Some(h) => Some((crate::housing::GpioInput::open(h)?, h.clone())),
        None => None,
    };

    // The boot check (K5): the commissioned reference is loaded before the first frame, so a
    // camera turned or covered while the box was off is reported within `tamper.start_after`.
    // A damaged or unfitting reference must not stop the box: it runs as if not commissioned,
    // says so, and the status shows `commissioned: false`.
    let stored = if cfg.tamper.enabled {
        match crate::scene::load_reference(&crate::scene::reference_path(state_dir)) {
            Ok(Some(r)) => match r.misfit(&cfg) {
                None => {
                    tracing::info!(learned_at = %r.learned_at, samples = r.samples, digest = %r.digest, "scene reference loaded");
                    Some(r)
                }
                Some(why) => {
                    tracing::error!("the scene reference cannot be used: {why}; run `vakt commission --force`");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::error!("{e:#}");
                None
            }
        }
    } else {
        None
    };
    if stored.is_none() && cfg.tamper.enabled {
        tracing::warn!(
            "the scene is not commissioned: too_blurry and scene_changed are off until `vakt commission` (too_dark and too_bright work)"
        );
    }
    let condition = Arc::new(std::sync::Mutex::new(Condition {
        alarms: Vec::new(),
        commissioned: stored.is_some(),
        recorder: if cfg.storage.record { "starting" } else { "off" },
        key_protection,
    }));
    let tamper = cfg.tamper.enabled.then(|| {
        let source = match &stored {
            Some(r) => crate::scene::ReferenceSource::Known(r.reference.clone()),
            None => crate::scene::ReferenceSource::Missing,
        };
        crate::scene::TamperStage::new(&cfg.tamper, cfg.privacy.polygons(), source)
    });

    // A missing or damaged model does not heal by restarting: exit 2, like a config error.
    let objects = if cfg.detect.enabled {
        let mut stage = crate::objects::ObjectStage::load(&cfg).map_err(|e| crate::UsageError(format!("{e:#}")))?;
        // once running, a failing or slow detector is an alarm, not an exit (D10)
        stage.watch_health(&cfg);
        if !opts.fault_detector_delay.is_zero() || opts.fault_detector_fail_after.is_some() {
            tracing::warn!(delay = ?opts.fault_detector_delay, fail_after = ?opts.fault_detector_fail_after, "fault injection: detector");
            stage.inject_faults(opts.fault_detector_delay, opts.fault_detector_fail_after);
        }
        Some(stage)
    } else {
        tracing::warn!("object detection is off (`[detect] enabled = false`): motion and tamper events only");
        None
    };

    if let Some(addr) = cfg.mqtt.embedded_broker {
        broker::start(addr)?;
    }
    let online = {
        let (cfg, since, condition) = (cfg.clone(), since.clone(), condition.clone());
        move || status(&cfg, "online", boot, &since, &condition.lock().unwrap())
    };
    let offline = status(&cfg, "offline", boot, &since, &condition.lock().unwrap().clone());
    let identity_dir = state_dir.join("identity");
    let mqtt = Arc::new(Mqtt::start(&cfg.mqtt, &identity_dir, &cfg.box_.id, online, offline)?);
    match cfg.mqtt.scheme {
        vakt_core::config::MqttScheme::Tls if identity_dir.join(vakt_identity::TLS_CERT_FILE).is_file() => {
            tracing::info!("MQTT over TLS, the box authenticated by its certificate (mutual TLS)")
        }
        vakt_core::config::MqttScheme::Tls => tracing::warn!(
            "MQTT over TLS without a box certificate: install the CA's answer to identity/tls.csr as identity/tls.crt"
        ),
        vakt_core::config::MqttScheme::Plain => {
            tracing::warn!("MQTT in plaintext (mqtt://): events cross the network unencrypted and unauthenticated")
        }
    }
    tracing::info!(
        box_id = %cfg.box_.id, boot, broker = %cfg.mqtt.url, topics = %format!("{}/#", cfg.mqtt.prefix),
        recording = cfg.storage.record, retention = %humantime::format_duration(cfg.storage.max_age),
        "vakt {VERSION} starting"
    );

    let board = &cfg.hardware.profile;
    let missing = vakt_media::elements::prefer_decoders(&board.gstreamer.decoders);
    if !missing.is_empty() {
        tracing::warn!(
            profile = %cfg.hardware.origin, missing = %missing.join(", "),
            "the board profile's hardware decoders are not installed; decoding in software (run `vakt doctor`)"
        );
    }
    let mut capture = Capture::start(CaptureConfig {
        source: cfg.source.spec.clone(),
        privacy: cfg.privacy.polygons(),
        analysis_width: crate::objects::analysis_frames(&cfg).0,
        colour: crate::objects::analysis_frames(&cfg).1,
        // the recording branch: full-resolution static-masked frames
        full_frames: cfg.storage.record,
        pacing: Pacing::Live,
        recovery: Recovery::Reconnect { max: cfg.source.reconnect_max },
        loop_stored: cfg.source.loop_files,
        stall_timeout: cfg.source.stall_timeout,
        queue: 4,
        camera_element: cfg.hardware.profile.gstreamer.camera_source.clone(),
    })
    .map_err(anyhow::Error::msg)?;
    let capture_counters = capture.counters();

    // Analysis on its own thread; it never waits on the broker. Each batch of events is committed
    // to the durable outbox (O1) and the sender woken; the sender never blocks analysis either.
    let (outbox, dropped_at_start) = open_outbox(&cfg)?;
    let drops_pending = !outbox.pending_drops()?.is_empty();
    let outbox = Arc::new(std::sync::Mutex::new(outbox));
    let outbox_wake = Arc::new(tokio::sync::Notify::new());
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    let stats = Arc::new(AnalysisStats::default());
    stats.events_dropped.store(dropped_at_start, Ordering::Relaxed);
    let origin =
        Origin { box_id: cfg.box_.id.clone(), site: cfg.box_.site.clone(), camera: cfg.source.camera.clone(), boot };
    let mut analyzer = Analyzer::new(&cfg, EventFactory::new(origin, seq, Box::new(SystemClock)), tamper, objects)?;
    if recorder.is_some() && cfg.detect.enabled {
        // the track boxes stored with the footage are what an export masks people from: the
        // detector runs at the masker's interval, faces included, as for any picture egress
        analyzer.prepare_for_redaction(&cfg)?;
    }
    let analysis_recorder = recorder.take();
    // The audit log to <prefix>/audit: new entries go through the outbox (never dropped), so the
    // security unit sees every access, export and change where it keeps its records
    let audit_task = {
        let (outbox, wake) = (outbox.clone(), outbox_wake.clone());
        let mut forwarder = AuditForwarder::new(&cfg, &mqtt.topics.audit);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(2));
            loop {
                every.tick().await;
                match tokio::task::block_in_place(|| forwarder.forward(&outbox)) {
                    Ok(0) => {}
                    Ok(_) => wake.notify_one(),
                    Err(e) => tracing::error!("cannot forward the audit log: {e:#}"),
                }
            }
        })
    };
    // Signed commands from <prefix>/cmd, answered on <prefix>/reply (commands.rs)
    let restart_requested = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let command_task = {
        let service = crate::control::Service { store: store.clone(), cfg: cfg.clone(), actor: "mqtt" };
        let commands = Arc::new(crate::commands::Commands::open(
            &cfg,
            service,
            vakt_identity::Identity::load(&state_dir.join("identity")).ok(),
        )?);
        let mut rx = mqtt.take_commands().expect("taken once");
        let (outbox, wake, cancel, restart) =
            (outbox.clone(), outbox_wake.clone(), cancel.clone(), restart_requested.clone());
        let topic = mqtt.topics.reply.clone();
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let c = commands.clone();
                let reply = tokio::task::spawn_blocking(move || c.handle(&p)).await.unwrap_or_default();
                // the answer goes through the outbox like the audit entries (never dropped): a
                // link lost right after the command, or a restart to apply it, delays it only
                if !reply.is_empty() {
                    let msg = crate::outbox::Msg {
                        seq: 0,
                        class: crate::outbox::Class::Report,
                        payload: reply,
                        topic: Some(topic.clone()),
                        retain: false,
                    };
                    match tokio::task::block_in_place(|| {
                        outbox.lock().unwrap().append_msgs(&[msg], crate::record::now_ms())
                    }) {
                        Ok(_) => wake.notify_one(),
                        Err(e) => tracing::error!("cannot keep a command's answer in the outbox: {e}"),
                    }
                }
                if commands.restart.load(Ordering::SeqCst) {
                    tracing::warn!("a signed command changed the configuration: restarting to apply it");
                    restart.store(true, Ordering::SeqCst);
                    cancel.cancel();
                    break;
                }
            }
        })
    };
    let mut committer = Committer {
        ob: outbox.clone(),
        connected: mqtt.clone(),
        drops_pending,
        last_report: None,
        last_age_check: Instant::now(),
        onvif: cfg.mqtt.onvif.then(|| cfg.mqtt.prefix.clone()),
        signer: match vakt_identity::Identity::load(&state_dir.join("identity")) {
            Ok(id) => {
                tracing::info!(key = id.key_id(), "events are signed with the box's key");
                Some(id)
            }
            Err(e) => {
                tracing::warn!("events are NOT signed: the box has no identity ({e}); run `vakt provision`");
                None
            }
        },
    };
    let wake = outbox_wake.clone();
    let (link, unreachable_alarm) = (mqtt.counters.clone(), cfg.mqtt.unreachable_alarm);
    let (alarms_tx, mut alarms_rx) = tokio::sync::watch::channel::<Vec<&'static str>>(Vec::new());
    let frames_rx = capture.receiver().clone();
    let st = stats.clone();
    let analysis_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stall_stop = analysis_stop.clone();
    // The enclosure switch, when the board has one: polled on its own thread.
    let (housing_tx, housing_rx) = crossbeam_channel::unbounded::<bool>();
    let housing_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let housing_thread = match housing_input {
        Some((input, h)) => {
            tracing::info!(chip = %h.chip.display(), line = h.line, "housing switch monitored");
            Some(crate::housing::spawn_monitor(Box::new(input), h.debounce, housing_tx, housing_stop.clone())?)
        }
        None => None,
    };
    // without a switch (or once its thread ends) this arm of the select must never fire
    let mut housing_rx = if housing_thread.is_some() { housing_rx } else { crossbeam_channel::never() };
    let analysis = std::thread::Builder::new().name("analysis".into()).spawn(move || {
        let mut deliver = |analyzer: &mut Analyzer, events: Vec<Event>| {
            for e in &events {
                if print_events {
                    use std::io::Write;
                    // as published (signed); a closed pipe (e.g. `| head`) must not take the box down
                    let p = crate::signing::payload(e, committer.signer.as_ref());
                    let _ = writeln!(std::io::stdout(), "{}", String::from_utf8_lossy(&p));
                }
                tracing::info!(kind = e.kind.as_str(), phase = ?e.phase, zone = e.zone.as_deref().unwrap_or("-"), seq = e.seq, "event");
            }
            committer.commit(analyzer, &events, &st);
            if !events.is_empty() {
                wake.notify_one();
            }
        };
        // the broker out of reach for longer than mqtt.unreachable_alarm: an alarm, committed like
        // any event and sent when the link returns
        let link_down_for = || {
            let since = link.down_since_ms.load(Ordering::SeqCst);
            (since != 0)
                .then(|| Duration::from_millis((crate::record::now_ms() as u64).saturating_sub(since)))
                .filter(|d| *d >= unreachable_alarm)
        };
        let mut clock_check = ClockCheck::new(opts.fault_clock_jump_after);
        let outcome: anyhow::Result<()> = (|| {
            let ticks = crossbeam_channel::tick(Duration::from_secs(1));
            loop {
                let msg = crossbeam_channel::select! {
                    recv(frames_rx) -> m => match m { Ok(m) => m, Err(_) => break },
                    recv(ticks) -> _ => {
                        // the broker alarm also while no frames come (signal lost)
                        let mut events = analyzer.broker(link_down_for())?;
                        if let Some(jump) = clock_check.step() {
                            tracing::warn!(jump_s = jump, "the wall clock jumped");
                            events.push(analyzer.clock_jumped(jump)?);
                        }
                        if !events.is_empty() {
                            deliver(&mut analyzer, events);
                            let _ = alarms_tx.send(analyzer.alarms());
                        }
                        continue;
                    }
                    recv(housing_rx) -> h => {
                        match h {
                            Ok(open) => {
                                tracing::warn!(open, "housing switch");
                                let events = analyzer.housing(open)?;
                                deliver(&mut analyzer, events);
                                let _ = alarms_tx.send(analyzer.alarms());
                            }
                            Err(_) => housing_rx = crossbeam_channel::never(),
                        }
                        continue;
                    }
                };
                st.handled.fetch_add(1, Ordering::Relaxed);
                let events = match msg {
                    CaptureMsg::Frame(f) => {
                        if opts.fault_stall_analysis_after.is_some_and(|s| f.media_time_s() >= s) {
                            tracing::warn!("fault injection: analysis stalls now");
                            while !stall_stop.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            return Ok(());
                        }
                        st.frames.fetch_add(1, Ordering::Relaxed);
                        let a = analyzer.process(&f)?;
                        let mut events = a.events;
                        if let Some(rec) = &analysis_recorder {
                            if let Some(r) = a.detector_result {
                                rec.send(crate::record::RecMsg::Detections(r));
                            }
                            // the recorder's trouble is an alarm, raised here with the analysis clock
                            let failure = rec.state().failure().map(str::to_string);
                            events.extend(analyzer.storage(failure.as_deref())?);
                        }
                        if let Some(c) = analyzer.object_counters() {
                            st.detector_runs.store(c.detector_runs, Ordering::Relaxed);
                            st.detector_failures.store(c.detector_failures, Ordering::Relaxed);
                        }
                        events
                    }
                    CaptureMsg::SignalLost { reason, media_time_s } => {
                        if let Some(rec) = &analysis_recorder {
                            rec.send(crate::record::RecMsg::Gap);
                        }
                        analyzer.signal_lost(&reason, media_time_s)?
                    }
                    CaptureMsg::SignalRestored { media_time_s } => {
                        tracing::info!("camera signal restored");
                        analyzer.signal_restored(media_time_s)?
                    }
                    // requested only when recording
                    CaptureMsg::Full(f) => {
                        if let Some(rec) = &analysis_recorder {
                            rec.send(crate::record::RecMsg::Frame(f));
                        }
                        Vec::new()
                    }
                    CaptureMsg::EndOfStream => {
                        tracing::info!("the clip ended (source.loop = false); no more frames");
                        analyzer.finish()?
                    }
                    CaptureMsg::Failed(e) => anyhow::bail!("capture failed: {e}"),
                };
                let mut events = events;
                events.extend(analyzer.broker(link_down_for())?);
                deliver(&mut analyzer, events);
                let alarms = analyzer.alarms();
                if *alarms_tx.borrow() != alarms {
                    let _ = alarms_tx.send(alarms);
                }
            }
            // Ingest stopped: end every open event (L5); the recorder closes its segment.
            let events = analyzer.finish()?;
            deliver(&mut analyzer, events);
            drop(analysis_recorder);
            Ok(())
        })();
        let _ = done_tx.send(outcome);
    })?;
    let publisher_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (mqtt, outbox, wake, stop) = (mqtt.clone(), outbox.clone(), outbox_wake.clone(), publisher_stop.clone());
        tokio::spawn(async move { mqtt.send_outbox(outbox, wake, stop).await })
    };

    let started = Instant::now();
    let mut health = tokio::time::interval(cfg.mqtt.health_interval);
    health.tick().await;
    notifier.ready(&format!("running: camera {}, broker {}", cfg.source.camera, cfg.mqtt.url));
    // The watchdog is fed only when capture, analysis and the publisher all made progress.
    let mut watchdog = tokio::time::interval(notifier.watchdog_interval.unwrap_or(Duration::from_secs(3600)));
    watchdog.tick().await;
    let sample = || crate::notify::Progress {
        frames_in: capture_counters.frames_in.load(Ordering::Relaxed),
        capture_beats: capture_counters.beats.load(Ordering::Relaxed),
        analysed: stats.handled.load(Ordering::Relaxed),
        publisher_beats: mqtt.counters.publisher_beats.load(Ordering::Relaxed),
    };
    let mut last_progress = sample();
    let (mut last_frames, mut last_at) = (0u64, Instant::now());
    let mut last_cpu = crate::notify::machine::cpu_seconds();
    let mut outcome: Option<anyhow::Result<()>> = None;
    let mut status_pending = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = watchdog.tick(), if notifier.watchdog_interval.is_some() => {
                let now = sample();
                if crate::notify::made_progress(last_progress, now) {
                    notifier.watchdog();
                } else {
                    tracing::error!(?now, "no progress since the last watchdog tick: not feeding the watchdog");
                }
                last_progress = now;
            }
            Ok(()) = alarms_rx.changed() => {
                let alarms = alarms_rx.borrow_and_update().clone();
                let c = {
                    let mut c = condition.lock().unwrap();
                    c.alarms = alarms;
                    c.clone()
                };
                tracing::info!(alarms = ?c.alarms, "status {}", if c.alarms.is_empty() { "ok" } else { "degraded" });
                // queued now, or retried at every health tick until it is
                status_pending = !mqtt.publish_status(status(&cfg, "online", boot, &since, &c));
            }
            r = &mut done_rx => {
                // a dropped sender means the analysis thread panicked: that is a failure
                outcome = Some(r.unwrap_or_else(|_| Err(anyhow::anyhow!("the analysis thread ended unexpectedly"))));
                break;
            }
            _ = health.tick() => {
                let frames = stats.frames.load(Ordering::Relaxed);
                let elapsed = last_at.elapsed().as_secs_f64().max(1e-3);
                let fps = (frames - last_frames) as f64 / elapsed;
                (last_frames, last_at) = (frames, Instant::now());
                use crate::notify::machine;
                let cpu = machine::cpu_seconds();
                let cpu_percent = cpu.zip(last_cpu).map(|(c, l)| ((c - l) / elapsed * 1000.0).round() / 10.0);
                last_cpu = cpu;
                let disk = machine::disk(state_dir);
                let h = json!({
                    "at": rfc3339(time::OffsetDateTime::now_utc()),
                    "boot": boot,
                    "uptime_s": started.elapsed().as_secs(),
                    "frames_in": capture_counters.frames_in.load(Ordering::Relaxed),
                    "frames_dropped": capture_counters.frames_dropped.load(Ordering::Relaxed),
                    "analysis_fps": (fps * 10.0).round() / 10.0,
                    "detector_runs": cfg.detect.enabled.then(|| stats.detector_runs.load(Ordering::Relaxed)),
                    "detector_failures": cfg.detect.enabled.then(|| stats.detector_failures.load(Ordering::Relaxed)),
                    "reconnects": capture_counters.reconnects.load(Ordering::Relaxed),
                    "outbox_depth": mqtt.counters.backlog.load(Ordering::Relaxed),
                    "oldest_unsent_s": mqtt.counters.oldest_unsent_ms.load(Ordering::Relaxed) / 1000,
                    "events_dropped": stats.events_dropped.load(Ordering::Relaxed),
                    "events_unstored": stats.events_unstored.load(Ordering::Relaxed),
                    "broker_connected": mqtt.counters.connected.load(Ordering::Relaxed),
                    "cpu_percent": cpu_percent,
                    "temperature_c": machine::temperature_c().map(|t| (t * 10.0).round() / 10.0),
                    "disk_free_bytes": disk.map(|d| d.0),
                    "disk_used_percent": disk.map(|(free, total)| if total == 0 { 0.0 } else { ((1.0 - free as f64 / total as f64) * 1000.0).round() / 10.0 }),
                    "clock_synced": crate::doctor::clock_synced(),
                    "recording": rec_state.as_ref().map(|(state, c)| json!({
                        "state": state.lock().unwrap().as_str(),
                        "segments": c.segments.load(Ordering::Relaxed),
                        "frames": c.frames.load(Ordering::Relaxed),
                        "frames_dropped": c.dropped.load(Ordering::Relaxed),
                        "bytes_written": c.bytes.load(Ordering::Relaxed),
                    })),
                    "storage": store.try_lock().ok().and_then(|s| s.usage().ok()).map(|(n, b)| json!({"segments": n, "bytes": b})),
                });
                if let Some((state, _)) = &rec_state {
                    let now = state.lock().unwrap().as_str();
                    let mut c = condition.lock().unwrap();
                    if c.recorder != now {
                        c.recorder = now;
                        status_pending = true;
                    }
                }
                mqtt.publish_health(h.to_string().into_bytes());
                if status_pending {
                    let c = condition.lock().unwrap().clone();
                    status_pending = !mqtt.publish_status(status(&cfg, "online", boot, &since, &c));
                }
            }
        }
    }

    // Shutdown, in order: 1 stop ingest, 2 end open events, 3 flush, 4 `stopped`, 5 disconnect.
    tracing::info!("shutting down: stopping ingest");
    notifier.stopping();
    analysis_stop.store(true, Ordering::SeqCst);
    capture.stop();
    drop(capture);
    let _ = tokio::task::spawn_blocking(move || analysis.join()).await;
    housing_stop.store(true, Ordering::SeqCst);
    if let Some(t) = housing_thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    if outcome.is_none() {
        outcome = match done_rx.try_recv() {
            Ok(r) => Some(r),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                Some(Err(anyhow::anyhow!("the analysis thread ended unexpectedly")))
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => None,
        };
    }
    // The analysis thread has ended: the sender drains the outbox and returns.
    publisher_stop.store(true, Ordering::SeqCst);
    outbox_wake.notify_one();
    let mut publisher = publisher;
    if tokio::time::timeout(Duration::from_secs(5), &mut publisher).await.is_err() {
        publisher.abort();
        let _ = publisher.await;
        tracing::warn!(
            unsent = mqtt.counters.backlog.load(Ordering::Relaxed),
            broker_connected = mqtt.counters.connected.load(Ordering::Relaxed),
            "the outbox could not be sent within 5 s: these events stay on disk and are sent at the next start"
        );
    }
    let left = mqtt.flush(Duration::from_secs(5)).await;
    if left > 0 {
        tracing::warn!(unacknowledged = left, "broker did not acknowledge every message before shutdown");
    }
    // every alarm event was ended at shutdown (L5): the stopped status lists none
    let last = Condition { alarms: Vec::new(), ..condition.lock().unwrap().clone() };
    if !mqtt.publish_status(status(&cfg, "stopped", boot, &since, &last)) {
        tracing::warn!("could not queue the `stopped` status; the broker keeps the last will (`offline`)");
    }
    mqtt.flush(Duration::from_secs(2)).await;
    command_task.abort();
    let _ = command_task.await;
    audit_task.abort();
    let _ = audit_task.await;
    match Arc::try_unwrap(mqtt) {
        Ok(m) => m.disconnect().await,
        Err(_) => tracing::warn!("MQTT link still shared at shutdown; not disconnecting cleanly"),
    }
    tracing::info!("stopped");
    if restart_requested.load(Ordering::SeqCst) {
        return Err(RestartToApply.into());
    }
    outcome.unwrap_or(Ok(()))
}

/// Opens the outbox (state_dir); says what an earlier run left unsent, and applies the age bound.
fn open_outbox(cfg: &Config) -> anyhow::Result<(crate::outbox::Outbox, u64)> {
    let mut ob = crate::outbox::Outbox::open(&cfg.box_.state_dir, cfg.mqtt.outbox_max_bytes, cfg.mqtt.outbox_max_age)?;
    let dropped = ob.enforce(crate::record::now_ms())?.total();
    if dropped > 0 {
        tracing::error!(count = dropped, "the outbox dropped events older than mqtt.outbox_max_age unsent");
    }
    let d = ob.depth()?;
    if d.messages > 0 {
        tracing::info!(
            messages = d.messages,
            bytes = d.bytes,
            "the outbox holds events not yet acknowledged by the broker: they are sent first"
        );
    }
    Ok((ob, dropped))
}

/// Forwards the audit log to the outbox (topic `<prefix>/audit`, one entry per message, exactly
/// as in the log), reading only what was appended since its last call: the log grows for the
/// box's life, and the forwarder looks every 2 s.
struct AuditForwarder {
    log: std::path::PathBuf,
    /// The last seq forwarded, durable (`state_dir/audit.forwarded`).
    mark: std::path::PathBuf,
    topic: String,
    /// Bytes of the log read, and the last line read (with its newline): a log whose bytes before
    /// that offset are not that line was replaced, and is read from its start again.
    at: Option<(u64, Vec<u8>)>,
}

impl AuditForwarder {
    fn new(cfg: &Config, topic: &str) -> AuditForwarder {
        AuditForwarder {
            log: crate::audit_path(cfg),
            mark: cfg.box_.state_dir.join("audit.forwarded"),
            topic: topic.to_string(),
            at: None,
        }
    }

    /// Commits the entries after the mark to the outbox, then records the last seq forwarded. A
    /// crash between the two forwards some entries twice; consumers de-duplicate by the entry's
    /// `seq`. Returns how many it forwarded.
    fn forward(&mut self, outbox: &std::sync::Mutex<crate::outbox::Outbox>) -> anyhow::Result<usize> {
        use std::io::{Read, Seek};
        use std::os::unix::fs::FileExt;
        let done: u64 = std::fs::read_to_string(&self.mark).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let mut f = match std::fs::File::open(&self.log) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.at = None;
                return Ok(0);
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot open {}", self.log.display()))),
        };
        let from = match &self.at {
            Some((read, tail)) if *read >= tail.len() as u64 => {
                let mut seen = vec![0u8; tail.len()];
                match f.read_exact_at(&mut seen, read - tail.len() as u64) {
                    Ok(()) if seen == *tail => *read,
                    _ => 0,
                }
            }
            _ => 0,
        };
        f.seek(std::io::SeekFrom::Start(from))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        // whole lines only: a line being written is read at the next call
        let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut msgs = Vec::new();
        let mut last = done;
        for line in buf[..complete].split(|&b| b == b'\n') {
            let Some(seq) = serde_json::from_slice::<serde_json::Value>(line).ok().and_then(|v| v["seq"].as_u64())
            else {
                continue; // a torn line: the log's own recovery deals with it
            };
            if seq > done {
                msgs.push(crate::outbox::Msg {
                    seq,
                    class: crate::outbox::Class::Report,
                    payload: line.to_vec(),
                    topic: Some(self.topic.clone()),
                    retain: false,
                });
                last = last.max(seq);
            }
        }
        if !msgs.is_empty() {
            outbox.lock().unwrap().append_msgs(&msgs, crate::record::now_ms())?;
            vakt_core::counters::write_durable(&self.mark, format!("{last}\n").as_bytes())?;
        }
        // only once committed: after an error the same lines are read again
        if complete > 0 {
            let start = buf[..complete - 1].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            self.at = Some((from + complete as u64, buf[start..complete].to_vec()));
        }
        Ok(msgs.len())
    }
}

/// The box stopped so that its service manager starts it again with a configuration a signed
/// command changed: exit status 75 (EX_TEMPFAIL), which systemd's `Restart=on-failure` restarts.
#[derive(Debug, thiserror::Error)]
#[error("restarting to apply a configuration change made by a signed command")]
pub struct RestartToApply;

/// Watches the wall clock against the monotonic one, once a second (`clock_jumped`).
struct ClockCheck {
    start: Instant,
    last: Option<(Instant, f64)>,
    fault_after: Option<u64>,
}

impl ClockCheck {
    /// A step larger than this between two checks is a jump.
    const THRESHOLD_S: f64 = 2.0;

    fn new(fault_after: Option<u64>) -> ClockCheck {
        ClockCheck { start: Instant::now(), last: None, fault_after }
    }

    /// The jump since the last check, in seconds, if there was one.
    fn step(&mut self) -> Option<f64> {
        let now = Instant::now();
        let mut wall = crate::record::now_ms() as f64 / 1000.0;
        if self.fault_after.is_some_and(|s| now.duration_since(self.start).as_secs() >= s) {
            wall += 3600.0;
        }
        let jump = self.last.map(|(t, w)| (wall - w) - now.duration_since(t).as_secs_f64());
        self.last = Some((now, wall));
        jump.filter(|j| j.abs() > Self::THRESHOLD_S)
    }
}

/// How often at most an `events_dropped` report is made while drops go on.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);
/// How often the age bound is applied when no events come (O4).
const AGE_CHECK_EVERY: Duration = Duration::from_secs(60);

/// The analysis thread's side of the outbox: commits each batch of events in one transaction
/// (O1: durable before it counts), and reports what the bounds dropped (O5) once the broker is
/// reachable, at most every `DROP_REPORT_EVERY`.
struct Committer {
    ob: Arc<std::sync::Mutex<crate::outbox::Outbox>>,
    connected: Arc<Mqtt>,
    drops_pending: bool,
    last_report: Option<Instant>,
    last_age_check: Instant,
    /// Signs every message (None: the box has no identity; messages go unsigned).
    signer: Option<vakt_identity::Identity>,
    /// The topic prefix when the ONVIF dialect is on.
    onvif: Option<String>,
}

impl Committer {
    fn commit(&mut self, analyzer: &mut Analyzer, events: &[Event], st: &AnalysisStats) {
        use crate::outbox::Class;
        let age_due = self.last_age_check.elapsed() >= AGE_CHECK_EVERY;
        if !events.is_empty() || age_due {
            self.last_age_check = Instant::now();
            let class = |e: &Event| if e.kind.is_alarm() { Class::Alarm } else { Class::Ordinary };
            let mut batch = Vec::new();
            for e in events {
                let payload = crate::signing::payload(e, self.signer.as_ref());
                batch.push(crate::outbox::Msg { seq: e.seq, class: class(e), payload, topic: None, retain: false });
                if let Some(prefix) = &self.onvif {
                    for (topic, payload, retain) in crate::onvif::messages(e, prefix) {
                        let m = crate::outbox::Msg { seq: e.seq, class: class(e), payload, topic: Some(topic), retain };
                        batch.push(m);
                    }
                }
            }
            match self.ob.lock().unwrap().append_msgs(&batch, crate::record::now_ms()) {
                Ok(d) if d.total() == 0 => {}
                Ok(d) => {
                    self.drops_pending = true;
                    let n = d.total();
                    let total = st.events_dropped.fetch_add(n, Ordering::Relaxed) + n;
                    // said at the first drop, then whenever the total passes a power of two
                    if total == n || (total - n).ilog2() != total.ilog2() {
                        tracing::error!(
                            full = d.full,
                            too_old = d.old,
                            total,
                            "the outbox dropped events unsent (full, or older than mqtt.outbox_max_age)"
                        );
                    }
                }
                Err(e) => {
                    let n = batch.len() as u64;
                    let total = st.events_unstored.fetch_add(n, Ordering::Relaxed) + n;
                    tracing::error!(lost = n, total, "cannot commit events to the outbox: {e}");
                }
            }
        }
        let due = self.last_report.is_none_or(|t| t.elapsed() >= DROP_REPORT_EVERY);
        if self.drops_pending && due && self.connected.counters.connected.load(Ordering::Relaxed) {
            self.last_report = Some(Instant::now());
            let mut ob = self.ob.lock().unwrap();
            let reports: anyhow::Result<Vec<(u64, Vec<u8>)>> = (|| {
                let mut out = Vec::new();
                for d in ob.pending_drops()? {
                    tracing::warn!(count = d.count, reason = d.reason, ranges = ?d.ranges, "reporting events dropped unsent (events_dropped)");
                    let e = analyzer.events_dropped(&d)?;
                    out.push((e.seq, crate::signing::payload(&e, self.signer.as_ref())));
                }
                Ok(out)
            })();
            match reports {
                Ok(r) => match ob.append_reports(&r, crate::record::now_ms()) {
                    Ok(()) => self.drops_pending = false,
                    Err(e) => {
                        // the reports' seq values are gaps now; the drops stay recorded and are
                        // reported again at the next attempt
                        st.events_unstored.fetch_add(r.len() as u64, Ordering::Relaxed);
                        tracing::error!("cannot commit the events_dropped report: {e}");
                    }
                },
                Err(e) => tracing::error!("cannot make the events_dropped report: {e:#}"),
            }
        }
    }
}

/// First SIGINT/SIGTERM: orderly shutdown. Second: exit at once.
fn spawn_signal_handler(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (mut int, mut term) = match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(i), Ok(t)) => (i, t),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for SIGINT/SIGTERM");
                return;
            }
        };
        for n in 0..2 {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if n == 0 {
                tracing::info!("signal received: shutting down (send it again to exit at once)");
                cancel.cancel();
            } else {
                tracing::warn!("second signal: exiting at once");
                // _exit, not exit: exit's handlers tear down GLib while the capture thread may
                // be registering GStreamer types, which aborts the process (seen in CI)
                // SAFETY: _exit ends the process at once; nothing after it runs
                unsafe { libc::_exit(130) };
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_audit_forwarder_reads_what_was_appended_and_a_replaced_log_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let outbox =
            std::sync::Mutex::new(crate::outbox::Outbox::open(dir.path(), 1 << 20, Duration::from_secs(3600)).unwrap());
        let log = dir.path().join("audit.log");
        let mut fw = AuditForwarder {
            log: log.clone(),
            mark: dir.path().join("audit.forwarded"),
            topic: "p/audit".into(),
            at: None,
        };
        let entry = |seq: u64| format!("{{\"seq\":{seq},\"action\":\"a\"}}\n");
        assert_eq!(fw.forward(&outbox).unwrap(), 0, "no log yet");
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        f.write_all(format!("{}{}{{\"seq\":3,\"act", entry(1), entry(2)).as_bytes()).unwrap();
        assert_eq!(fw.forward(&outbox).unwrap(), 2, "the line being written waits");
        f.write_all(b"ion\":\"a\"}\n").unwrap();
        f.write_all(entry(4).as_bytes()).unwrap();
        assert_eq!(fw.forward(&outbox).unwrap(), 2);
        assert_eq!(fw.forward(&outbox).unwrap(), 0, "nothing new");
        let seqs = |o: &std::sync::Mutex<crate::outbox::Outbox>| {
            o.lock().unwrap().all().unwrap().iter().map(|r| r.seq).collect::<Vec<_>>()
        };
        assert_eq!(seqs(&outbox), [1, 2, 3, 4]);
        let rows = outbox.lock().unwrap().all().unwrap();
        assert_eq!(rows[2].payload, br#"{"seq":3,"action":"a"}"#, "the line as written");
        assert_eq!(rows[2].topic.as_deref(), Some("p/audit"));
        // the mark survives a restart: a new forwarder sends nothing again
        fw.at = None;
        assert_eq!(fw.forward(&outbox).unwrap(), 0);
        // a replaced log is read from its start, not from the old offset (which here falls inside
        // the new log's first line): only seqs past the mark go
        assert_eq!(fw.forward(&outbox).unwrap(), 0);
        std::fs::remove_file(&log).unwrap();
        let long = |seq: u64| format!("{{\"seq\":{seq},\"action\":\"{}\"}}\n", "x".repeat(200));
        std::fs::write(&log, format!("{}{}{}", entry(3), long(5), long(6))).unwrap();
        assert_eq!(fw.forward(&outbox).unwrap(), 2);
        assert_eq!(seqs(&outbox), [1, 2, 3, 4, 5, 6]);
    }
}
