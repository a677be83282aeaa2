//! `vakt run`: the live box. Tasks: capture (GStreamer threads), analysis (its own thread,
//! OpenCV), the MQTT link (tokio), health. One cancellation token reaches all of them; shutdown
//! happens in a fixed order (design `edge/docs/design/events.md`, "Shutdown").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::sync::mpsc;
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

/// What the analysis thread tells the async side.
enum FromAnalysis {
    Event(Box<Event>),
    Fatal(String),
}

/// Health figures written by the analysis thread.
#[derive(Default)]
struct AnalysisStats {
    frames: AtomicU64,
    events_dropped: AtomicU64,
}

fn status(cfg: &Config, state: &str, boot: u64) -> Vec<u8> {
    json!({
        "state": state,
        "version": VERSION,
        "box": cfg.box_.id,
        "site": cfg.box_.site,
        "camera": cfg.source.camera,
        "boot": boot,
        "config_digest": cfg.digest,
        "recording": cfg.storage.record,
        "retention_s": cfg.storage.max_age.as_secs(),
        "retention": humantime::format_duration(cfg.storage.max_age).to_string(),
        "at": rfc3339(time::OffsetDateTime::now_utc()),
    })
    .to_string()
    .into_bytes()
}

pub async fn run(cfg: Config, print_events: bool) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());

    let state_dir = &cfg.box_.state_dir;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    audit_config_change(&cfg, "box")?;
    let boot =
        next_boot(state_dir).with_context(|| format!("cannot update the boot counter in {}", state_dir.display()))?;
    let seq = SeqAllocator::open(state_dir)
        .with_context(|| format!("cannot open the seq counter in {}", state_dir.display()))?;
    if cfg.storage.record {
        tracing::warn!(
            "storage.record = true, but recording is not built yet in this version: nothing is recorded; the status message says recording=true as configured"
        );
    }

    if let Some(addr) = cfg.mqtt.embedded_broker {
        broker::start(addr)?;
    }
    let mqtt = Mqtt::start(&cfg.mqtt, &cfg.box_.id, status(&cfg, "online", boot), status(&cfg, "offline", boot));
    tracing::info!(
        box_id = %cfg.box_.id, boot, broker = %cfg.mqtt.url, topics = %format!("{}/#", cfg.mqtt.prefix),
        recording = cfg.storage.record, retention = %humantime::format_duration(cfg.storage.max_age),
        "vakt {VERSION} starting"
    );

    let mut capture = Capture::start(CaptureConfig {
        source: cfg.source.spec.clone(),
        privacy: cfg.privacy.polygons(),
        analysis_width: cfg.motion.width,
        pacing: Pacing::Live,
        recovery: Recovery::Reconnect { max: cfg.source.reconnect_max },
        loop_stored: cfg.source.loop_files,
        stall_timeout: cfg.source.stall_timeout,
        queue: 4,
    })
    .map_err(anyhow::Error::msg)?;
    let capture_counters = capture.counters();

    // Analysis on its own thread; it never waits on the broker (bounded try_send, counted drops).
    let (tx, mut rx) = mpsc::channel::<FromAnalysis>(10_000);
    let stats = Arc::new(AnalysisStats::default());
    let origin =
        Origin { box_id: cfg.box_.id.clone(), site: cfg.box_.site.clone(), camera: cfg.source.camera.clone(), boot };
    let mut analyzer = Analyzer::new(&cfg, EventFactory::new(origin, seq, Box::new(SystemClock)))?;
    let frames_rx = capture.receiver().clone();
    let st = stats.clone();
    let analysis = std::thread::Builder::new().name("analysis".into()).spawn(move || {
        let send = |m: FromAnalysis| {
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(m) {
                st.events_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::error!("event queue full: an event was dropped (broker unreachable for long?)");
            }
        };
        let outcome: anyhow::Result<()> = (|| {
            for msg in frames_rx.iter() {
                let events = match msg {
                    CaptureMsg::Frame(f) => {
                        st.frames.fetch_add(1, Ordering::Relaxed);
                        analyzer.process(&f)?.1
                    }
                    CaptureMsg::SignalLost { reason, media_time_s } => analyzer.signal_lost(&reason, media_time_s)?,
                    CaptureMsg::SignalRestored { media_time_s } => {
                        tracing::info!("camera signal restored");
                        analyzer.signal_restored(media_time_s)?
                    }
                    CaptureMsg::EndOfStream => {
                        tracing::info!("the clip ended (source.loop = false); no more frames");
                        analyzer.finish()?
                    }
                    CaptureMsg::Failed(e) => anyhow::bail!("capture failed: {e}"),
                };
                events.into_iter().for_each(|e| send(FromAnalysis::Event(Box::new(e))));
            }
            // Ingest stopped: end every open event (L5).
            analyzer.finish()?.into_iter().for_each(|e| send(FromAnalysis::Event(Box::new(e))));
            Ok(())
        })();
        if let Err(e) = outcome {
            send(FromAnalysis::Fatal(format!("{e:#}")));
        }
    })?;

    let started = Instant::now();
    let mut health = tokio::time::interval(cfg.mqtt.health_interval);
    health.tick().await;
    let (mut last_frames, mut last_at) = (0u64, Instant::now());
    let mut fatal: Option<String> = None;

    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            m = rx.recv() => match m {
                Some(FromAnalysis::Event(e)) => publish(&mqtt, &e, print_events).await,
                Some(FromAnalysis::Fatal(e)) => { fatal = Some(e); break; }
                None => break,
            },
            _ = health.tick() => {
                let frames = stats.frames.load(Ordering::Relaxed);
                let fps = (frames - last_frames) as f64 / last_at.elapsed().as_secs_f64().max(1e-3);
                (last_frames, last_at) = (frames, Instant::now());
                let h = json!({
                    "at": rfc3339(time::OffsetDateTime::now_utc()),
                    "boot": boot,
                    "uptime_s": started.elapsed().as_secs(),
                    "frames_in": capture_counters.frames_in.load(Ordering::Relaxed),
                    "frames_dropped": capture_counters.frames_dropped.load(Ordering::Relaxed),
                    "analysis_fps": (fps * 10.0).round() / 10.0,
                    "reconnects": capture_counters.reconnects.load(Ordering::Relaxed),
                    "events_dropped": stats.events_dropped.load(Ordering::Relaxed),
                    "broker_connected": mqtt.counters.connected.load(Ordering::Relaxed),
                });
                let _ = mqtt.publish_health(h.to_string().into_bytes()).await;
            }
        }
    }

    // Shutdown, in order: 1 stop ingest, 2 end open events, 3 flush, 4 `stopped`, 5 disconnect.
    tracing::info!("shutting down: stopping ingest");
    capture.stop();
    drop(capture);
    let _ = tokio::task::spawn_blocking(move || analysis.join()).await;
    while let Ok(m) = rx.try_recv() {
        match m {
            FromAnalysis::Event(e) => publish(&mqtt, &e, print_events).await,
            FromAnalysis::Fatal(e) => fatal = fatal.or(Some(e)),
        }
    }
    let left = mqtt.flush(Duration::from_secs(5)).await;
    if left > 0 {
        tracing::warn!(unacknowledged = left, "broker did not acknowledge every message before shutdown");
    }
    let _ = mqtt.publish_status(status(&cfg, "stopped", boot)).await;
    mqtt.flush(Duration::from_secs(2)).await;
    mqtt.disconnect().await;
    tracing::info!("stopped");
    match fatal {
        Some(e) => anyhow::bail!(e),
        None => Ok(()),
    }
}

async fn publish(mqtt: &Mqtt, e: &Event, print: bool) {
    if print {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
    }
    tracing::info!(kind = e.kind.as_str(), phase = ?e.phase, zone = e.zone.as_deref().unwrap_or("-"), seq = e.seq, "event");
    if let Err(err) = mqtt.publish_event(e).await {
        tracing::error!(seq = e.seq, error = %err, "cannot queue the event for the broker");
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
                std::process::exit(130);
            }
        }
    });
}
