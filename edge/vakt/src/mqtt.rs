//! MQTT link to the municipality's broker (rumqttc): topics, retained status with last will,
//! QoS 1 events, reconnect forever with capped backoff. The event loop is polled continuously and
//! never waits on analysis; analysis never waits on it. Reference: `edge/docs/ref/mqtt.md`.
//!
//! Seam for the durable outbox (delivery issue): `Mqtt::publish_event` is the single place events
//! enter the link.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, Transport};
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
}

pub struct Mqtt {
    client: AsyncClient,
    pub topics: Topics,
    pub counters: Arc<LinkCounters>,
    task: Option<JoinHandle<()>>,
}

impl Mqtt {
    /// Connects in the background. `online` is published retained on every (re)connection;
    /// `offline` is the last will.
    pub fn start(cfg: &MqttConfig, client_id: &str, online: Vec<u8>, offline: Vec<u8>) -> Mqtt {
        let topics = Topics::new(&cfg.prefix);
        let mut opts = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
        opts.set_keep_alive(cfg.keep_alive);
        opts.set_clean_session(true);
        opts.set_max_packet_size(256 * 1024, 256 * 1024);
        opts.set_last_will(LastWill::new(&topics.status, offline, QoS::AtLeastOnce, true));
        if cfg.scheme == MqttScheme::Tls {
            opts.set_transport(Transport::tls_with_default_config());
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
        Mqtt { client, topics, counters, task: Some(task) }
    }

    /// Queues one event (QoS 1). Waits only if rumqttc's request queue is full.
    pub async fn publish_event(&self, e: &Event) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(e)?;
        self.counters.submitted.fetch_add(1, Ordering::SeqCst);
        self.client.publish(&self.topics.events, QoS::AtLeastOnce, false, payload).await?;
        Ok(())
    }

    pub async fn publish_health(&self, payload: Vec<u8>) -> anyhow::Result<()> {
        // QoS 0: a missed health sample is replaced by the next one.
        self.client.try_publish(&self.topics.health, QoS::AtMostOnce, false, payload)?;
        Ok(())
    }

    /// Publishes a retained status (QoS 1).
    pub async fn publish_status(&self, payload: Vec<u8>) -> anyhow::Result<()> {
        self.counters.submitted.fetch_add(1, Ordering::SeqCst);
        self.client.publish(&self.topics.status, QoS::AtLeastOnce, true, payload).await?;
        Ok(())
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
    online: Vec<u8>,
    c: Arc<LinkCounters>,
    url: String,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match el.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(500);
                c.connected.store(true, Ordering::SeqCst);
                let n = c.connects.fetch_add(1, Ordering::SeqCst);
                tracing::info!(broker = %url, reconnect = n > 0, "connected to the MQTT broker");
                c.submitted.fetch_add(1, Ordering::SeqCst);
                if client.try_publish(&status_topic, QoS::AtLeastOnce, true, online.clone()).is_err() {
                    c.submitted.fetch_sub(1, Ordering::SeqCst);
                }
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
                if c.connected.swap(false, Ordering::SeqCst) {
                    tracing::warn!(broker = %url, error = %e, "lost the MQTT broker; events are queued and will be sent on reconnect");
                } else {
                    tracing::debug!(broker = %url, error = %e, "MQTT broker unreachable");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
