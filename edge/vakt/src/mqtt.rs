//! MQTT link to the municipality's broker (rumqttc): topics, retained status with last will,
//! QoS 1 events, reconnect forever with capped backoff. The event loop is polled continuously and
//! never waits on analysis; analysis never waits on it. Reference: `edge/docs/ref/mqtt.md`.
//!
//! rumqttc drops its pending queue whenever the broker reports no session, so events are never
//! handed to it while the link is down: `publish_events` keeps them in its own bounded backlog
//! and drains it with non-blocking `try_publish` only while connected. Events in flight at the
//! moment the link drops can still be lost; the durable outbox (delivery issue) replaces this
//! backlog and closes that window. `publish_events` is the seam where it plugs in.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration,
    Transport,
};
use tokio::task::JoinHandle;

use vakt_core::config::{MqttConfig, MqttScheme};
use vakt_core::event::Event;

/// Every topic the box uses, under its prefix. `cmd`, `reply` and `audit` are reserved for the
/// delivery issue (signed commands, audit export); nothing is published or read there yet.
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub struct Topics {
    pub events: String,
    pub status: String,
    pub health: String,
    /// Reserved: signed commands (delivery issue).
    pub cmd: String,
    /// Reserved: command replies (delivery issue).
    pub reply: String,
    /// Reserved: audit export (delivery issue).
    pub audit: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        let t = |s: &str| format!("{prefix}/{s}");
        Topics {
            events: t("events"),
            status: t("status"),
            health: t("health"),
            cmd: t("cmd"),
            reply: t("reply"),
            audit: t("audit"),
        }
    }
}

/// Counters for health and for flushing at shutdown.
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub submitted: AtomicU64,
    pub acked: AtomicU64,
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    /// Events waiting for the link (not yet handed to rumqttc).
    pub backlog: AtomicU64,
    /// Events discarded because the backlog was full.
    pub dropped: AtomicU64,
    /// Woken on every (re)connection.
    pub link_up: Notify,
    /// Failed connection attempts since the last success.
    pub failures: AtomicU64,
    /// Publisher loop iterations: proof that the publisher runs.
    pub publisher_beats: AtomicU64,
}

/// Events kept while the broker is unreachable, at most.
pub const MAX_BACKLOG: usize = 100_000;

/// The system's CA bundle (Debian: package ca-certificates).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub struct Mqtt {
    client: AsyncClient,
    pub topics: Topics,
    pub counters: Arc<LinkCounters>,
    task: Option<JoinHandle<()>>,
}

impl Mqtt {
    /// Connects in the background. `online` builds the status published retained on every
    /// (re)connection; `offline` is the last will.
    pub fn start(
        cfg: &MqttConfig,
        client_id: &str,
        online: impl Fn() -> Vec<u8> + Send + 'static,
        offline: Vec<u8>,
    ) -> anyhow::Result<Mqtt> {
        let topics = Topics::new(&cfg.prefix);
        let mut opts = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
        opts.set_keep_alive(cfg.keep_alive);
        opts.set_clean_session(true);
        opts.set_max_packet_size(256 * 1024, 256 * 1024);
        opts.set_last_will(LastWill::new(&topics.status, offline, QoS::AtLeastOnce, true));
        if cfg.scheme == MqttScheme::Tls {
            // Server authentication against `mqtt.ca_file` or the system's CAs; mutual TLS with
            // the box certificate comes with the delivery issue.
            opts.set_transport(Transport::Tls(tls_configuration(cfg)?));
        }
        let (client, eventloop) = AsyncClient::new(opts, 1000);
        let counters = Arc::new(LinkCounters::default());
        let task = tokio::spawn(drive(
            eventloop,
            client.clone(),
            topics.status.clone(),
            online,
            counters.clone(),
            cfg.url.clone(),
        ));
        Ok(Mqtt { client, topics, counters, task: Some(task) })
    }

    /// Publishes events from `rx` (QoS 1) until `rx` closes and the backlog is empty. Never
    /// blocks: while the link is down events wait in a backlog of at most `MAX_BACKLOG`; when it
    /// overflows the oldest go first, counted in `counters.dropped`.
    pub async fn publish_events(&self, mut rx: mpsc::Receiver<Event>) {
        // (alarm?, payload): on overflow motion goes first, alarms (tamper, signal) last
        let mut backlog: VecDeque<(bool, Vec<u8>)> = VecDeque::new();
        let mut closed = false;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            self.counters.publisher_beats.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                m = rx.recv(), if !closed => match m {
                    Some(e) => match serde_json::to_vec(&e) {
                        Ok(p) => backlog.push_back((e.kind.is_alarm(), p)),
                        Err(err) => tracing::error!(seq = e.seq, error = %err, "cannot serialise an event"),
                    },
                    None => closed = true,
                },
                _ = self.counters.link_up.notified() => {}
                _ = tick.tick() => {}
            }
            while backlog.len() > MAX_BACKLOG {
                match backlog.iter().position(|(alarm, _)| !alarm) {
                    Some(i) => backlog.remove(i),
                    None => backlog.pop_front(),
                };
                let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                if n == 0 || (n + 1).is_power_of_two() {
                    tracing::error!(
                        dropped = n + 1,
                        "event backlog full ({MAX_BACKLOG}): the oldest events are being dropped"
                    );
                }
            }
            if self.counters.connected.load(Ordering::SeqCst) {
                while let Some((_, p)) = backlog.front() {
                    if self.client.try_publish(&self.topics.events, QoS::AtLeastOnce, false, p.clone()).is_err() {
                        break; // rumqttc's queue is full: retry on the next tick
                    }
                    self.counters.submitted.fetch_add(1, Ordering::SeqCst);
                    backlog.pop_front();
                }
            }
            self.counters.backlog.store(backlog.len() as u64, Ordering::Relaxed);
            if closed && backlog.is_empty() {
                return;
            }
        }
    }

    /// QoS 0, only while connected: a missed health sample is replaced by the next one, and
    /// nothing piles up in rumqttc's queue during an outage.
    pub fn publish_health(&self, payload: Vec<u8>) {
        if self.counters.connected.load(Ordering::SeqCst) {
            let _ = self.client.try_publish(&self.topics.health, QoS::AtMostOnce, false, payload);
        }
    }

    /// Publishes a retained status (QoS 1) without waiting; false if it could not be queued.
    pub fn publish_status(&self, payload: Vec<u8>) -> bool {
        let queued = self.client.try_publish(&self.topics.status, QoS::AtLeastOnce, true, payload).is_ok();
        if queued {
            self.counters.submitted.fetch_add(1, Ordering::SeqCst);
        }
        queued
    }

    /// Waits until the broker acknowledged everything submitted, or `timeout` passes.
    /// Returns the number still unacknowledged.
    pub async fn flush(&self, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = self
                .counters
                .submitted
                .load(Ordering::SeqCst)
                .saturating_sub(self.counters.acked.load(Ordering::SeqCst));
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Clean disconnect: the broker drops the last will.
    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

async fn drive(
    mut el: EventLoop,
    client: AsyncClient,
    status_topic: String,
    online: impl Fn() -> Vec<u8>,
    c: Arc<LinkCounters>,
    url: String,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match el.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(500);
                c.failures.store(0, Ordering::Relaxed);
                let n = c.connects.fetch_add(1, Ordering::SeqCst);
                tracing::info!(broker = %url, reconnect = n > 0, "connected to the MQTT broker");
                c.submitted.fetch_add(1, Ordering::SeqCst);
                if client.try_publish(&status_topic, QoS::AtLeastOnce, true, online()).is_err() {
                    c.submitted.fetch_sub(1, Ordering::SeqCst);
                }
                c.connected.store(true, Ordering::SeqCst);
                c.link_up.notify_waiters();
            }
            Ok(MqttEvent::Incoming(Packet::PubAck(_))) => {
                c.acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => {
                c.connected.store(false, Ordering::SeqCst);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let failures = c.failures.fetch_add(1, Ordering::Relaxed);
                if c.connected.swap(false, Ordering::SeqCst) {
                    // rumqttc forgets unacknowledged publishes on a new session: count them as
                    // settled so that the shutdown flush does not wait for them.
                    c.acked.store(c.submitted.load(Ordering::SeqCst), Ordering::SeqCst);
                    tracing::warn!(broker = %url, error = %e, "lost the MQTT broker; new events wait in the backlog until it returns");
                } else if failures == 0 || (failures + 1).is_power_of_two() {
                    // said at once, then ever more rarely while it lasts
                    tracing::warn!(broker = %url, error = %e, attempts = failures + 1, "cannot reach the MQTT broker; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The TLS settings for an mqtts:// broker: the CA file the config names, else the system bundle.
pub fn tls_configuration(cfg: &MqttConfig) -> anyhow::Result<TlsConfiguration> {
    let ca = match &cfg.ca_file {
        Some(p) => std::fs::read(p).map_err(|e| {
            anyhow::anyhow!("mqtt.ca_file {} cannot be read ({e}); it must hold the broker's CA certificate in PEM", p.display())
        })?,
        None => std::fs::read(SYSTEM_CA_BUNDLE).map_err(|e| {
            anyhow::anyhow!("mqtt.url is mqtts:// but the CA bundle {SYSTEM_CA_BUNDLE} cannot be read ({e}); install ca-certificates or set mqtt.ca_file")
        })?,
    };
    Ok(TlsConfiguration::Simple { ca, alpn: None, client_auth: None })
}
