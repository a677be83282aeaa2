//! MQTT link to the municipality's broker (rumqttc): topics, retained status with last will,
//! QoS 1 events from the durable outbox, reconnect forever with capped backoff. The event loop is
//! polled continuously and never waits on analysis; analysis never waits on it. Reference:
//! `edge/docs/ref/mqtt.md`; the delivery design, with the proof of the PUBACK mapping:
//! `edge/docs/design/delivery.md`.
//!
//! rumqttc's `publish` does not return the packet id, so every publish goes through one `Gate`:
//! under its lock a publish is handed to rumqttc only while the session is live, and its tag (the
//! outbox row, or none) is queued in submission order. rumqttc emits exactly one
//! `Outgoing::Publish(pkid)` per publish, in the order it received them, so the event loop pops
//! the tags in step and knows each packet id's row; a PUBACK then names the row to delete. When a
//! session ends, the gate closes first, then everything rumqttc still holds is discarded with the
//! tags, and the outbox sends every unacknowledged row again in the next session.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration,
    Transport,
};
use tokio::task::JoinHandle;

use vakt_core::config::{MqttConfig, MqttScheme};

/// Every topic the box uses, under its prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    pub events: String,
    pub status: String,
    pub health: String,
    /// Signed commands (read; commands.rs).
    pub cmd: String,
    /// Answers to commands.
    pub reply: String,
    /// The audit log, entry by entry (through the outbox).
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
    /// Messages in the durable outbox (not yet acknowledged by the broker).
    pub backlog: AtomicU64,
    /// Age of the oldest of them, ms (0: none).
    pub oldest_unsent_ms: AtomicU64,
    /// Since when (ms since the epoch) the link is down; 0 while it is up.
    pub down_since_ms: AtomicU64,
    /// Woken on every (re)connection.
    pub link_up: Notify,
    /// Failed connection attempts since the last success.
    pub failures: AtomicU64,
    /// Publisher loop iterations: proof that the publisher runs.
    pub publisher_beats: AtomicU64,
}

/// The submission gate (see the module comment).
#[derive(Default)]
struct Gate {
    /// A session is up: publishes may be handed to rumqttc.
    live: bool,
    /// Sessions so far; the outbox sender restarts from its first row when this changes.
    session: u64,
    /// Tags of publishes handed to rumqttc whose `Outgoing::Publish` has not been seen, in order.
    fifo: VecDeque<Option<i64>>,
    /// Packet id → outbox row, for QoS 1 publishes sent and not yet acknowledged.
    inflight: HashMap<u16, i64>,
}

/// What the event loop tells the outbox sender.
enum LinkNote {
    /// The broker acknowledged this outbox row.
    Acked(i64),
}

/// The system's CA bundle (Debian: package ca-certificates).
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub struct Mqtt {
    client: AsyncClient,
    pub topics: Topics,
    pub counters: Arc<LinkCounters>,
    gate: Arc<Mutex<Gate>>,
    notes: Mutex<Option<mpsc::UnboundedReceiver<LinkNote>>>,
    commands: Mutex<Option<mpsc::Receiver<Vec<u8>>>>,
    task: Option<JoinHandle<()>>,
}

/// Hands one publish to rumqttc if the session is live (and is `session`, when given); queues
/// its tag. False: not handed over (no session, another session, or rumqttc's queue is full).
#[allow(clippy::too_many_arguments)]
fn submit(
    client: &AsyncClient,
    gate: &Mutex<Gate>,
    session: Option<u64>,
    topic: &str,
    qos: QoS,
    retain: bool,
    payload: Vec<u8>,
    tag: Option<i64>,
) -> bool {
    let mut g = gate.lock().unwrap();
    if !g.live || session.is_some_and(|s| s != g.session) {
        return false;
    }
    if client.try_publish(topic, qos, retain, payload).is_err() {
        return false;
    }
    g.fifo.push_back(tag);
    true
}

impl Mqtt {
    /// Connects in the background. `online` builds the status published retained on every
    /// (re)connection; `offline` is the last will.
    pub fn start(
        cfg: &MqttConfig,
        identity_dir: &std::path::Path,
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
            // Server authentication against `mqtt.ca_file` or the system's CAs, and the box's own
            // certificate (identity/tls.crt) for mutual TLS
            opts.set_transport(Transport::Tls(tls_configuration(cfg, identity_dir)?));
        }
        let (client, eventloop) = AsyncClient::new(opts, 1000);
        let counters = Arc::new(LinkCounters::default());
        // down from the start until the first connection
        counters.down_since_ms.store(crate::record::now_ms().max(1) as u64, Ordering::SeqCst);
        let gate = Arc::new(Mutex::new(Gate::default()));
        let (notes_tx, notes_rx) = mpsc::unbounded_channel();
        // a flood of commands waits here, at most 64; more are dropped unread (and unanswered)
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let task = tokio::spawn(drive(
            eventloop,
            client.clone(),
            gate.clone(),
            notes_tx,
            (topics.cmd.clone(), cmd_tx),
            topics.status.clone(),
            online,
            counters.clone(),
            cfg.url.clone(),
        ));
        Ok(Mqtt {
            client,
            topics,
            counters,
            gate,
            notes: Mutex::new(Some(notes_rx)),
            commands: Mutex::new(Some(cmd_rx)),
            task: Some(task),
        })
    }

    /// The messages that arrive on `<prefix>/cmd` (once).
    pub fn take_commands(&self) -> Option<mpsc::Receiver<Vec<u8>>> {
        self.commands.lock().unwrap().take()
    }

    /// Sends the outbox (QoS 1, commit order) for as long as the box runs: every row not yet
    /// acknowledged is handed to rumqttc once per session; a PUBACK deletes its row. Returns when
    /// `stop` is set and the outbox is empty (the caller bounds the wait).
    pub async fn send_outbox(
        &self,
        outbox: Arc<Mutex<crate::outbox::Outbox>>,
        wake: Arc<Notify>,
        stop: Arc<AtomicBool>,
    ) {
        let Some(mut notes) = self.notes.lock().unwrap().take() else { return };
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut session = 0u64;
        let mut cursor = 0i64; // last row handed over in `session`
        let mut acked: Vec<i64> = Vec::new();
        loop {
            self.counters.publisher_beats.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                n = notes.recv() => match n {
                    Some(LinkNote::Acked(id)) => acked.push(id),
                    None => return,
                },
                _ = wake.notified() => {}
                _ = self.counters.link_up.notified() => {}
                _ = tick.tick() => {}
            }
            while let Ok(LinkNote::Acked(id)) = notes.try_recv() {
                acked.push(id);
            }
            let result = tokio::task::block_in_place(|| -> Result<(), crate::outbox::OutboxError> {
                let mut ob = outbox.lock().unwrap();
                if !acked.is_empty() {
                    ob.remove(acked.drain(..))?;
                }
                let current = self.gate.lock().unwrap().session;
                if current != session {
                    // a new session: nothing handed over before is still pending in rumqttc
                    session = current;
                    cursor = 0;
                }
                'fill: loop {
                    let rows = ob.after(cursor, 256)?;
                    if rows.is_empty() {
                        break;
                    }
                    for r in rows {
                        tracing::trace!(seq = r.seq, row = r.id, "handing an event to the MQTT client");
                        let t = r.topic.as_deref().unwrap_or(&self.topics.events);
                        if !submit(
                            &self.client,
                            &self.gate,
                            Some(session),
                            t,
                            QoS::AtLeastOnce,
                            r.retain,
                            r.payload,
                            Some(r.id),
                        ) {
                            break 'fill; // no session, or rumqttc's queue is full: next tick
                        }
                        self.counters.submitted.fetch_add(1, Ordering::SeqCst);
                        cursor = r.id;
                    }
                }
                let d = ob.depth()?;
                self.counters.backlog.store(d.messages, Ordering::Relaxed);
                let age = d.oldest_ms.map(|t| (crate::record::now_ms() - t).max(1) as u64).unwrap_or(0);
                self.counters.oldest_unsent_ms.store(age, Ordering::Relaxed);
                Ok(())
            });
            if let Err(e) = result {
                tracing::error!("{e}");
            }
            if stop.load(Ordering::SeqCst) && self.counters.backlog.load(Ordering::Relaxed) == 0 {
                return;
            }
        }
    }

    /// QoS 0, only while connected: a missed health sample is replaced by the next one, and
    /// nothing piles up in rumqttc's queue during an outage.
    pub fn publish_health(&self, payload: Vec<u8>) {
        submit(&self.client, &self.gate, None, &self.topics.health, QoS::AtMostOnce, false, payload, None);
    }

    /// Publishes a retained status (QoS 1) without waiting; false if it could not be queued.
    pub fn publish_status(&self, payload: Vec<u8>) -> bool {
        let queued = submit(&self.client, &self.gate, None, &self.topics.status, QoS::AtLeastOnce, true, payload, None);
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

#[allow(clippy::too_many_arguments)]
async fn drive(
    mut el: EventLoop,
    client: AsyncClient,
    gate: Arc<Mutex<Gate>>,
    notes: mpsc::UnboundedSender<LinkNote>,
    (cmd_topic, commands): (String, mpsc::Sender<Vec<u8>>),
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
                {
                    let mut g = gate.lock().unwrap();
                    g.live = true;
                    g.session += 1;
                }
                if submit(&client, &gate, None, &status_topic, QoS::AtLeastOnce, true, online(), None) {
                    c.submitted.fetch_add(1, Ordering::SeqCst);
                }
                // a clean session: subscribe again at every connection
                if client.try_subscribe(&cmd_topic, QoS::AtLeastOnce).is_err() {
                    tracing::error!("cannot subscribe to {cmd_topic}: commands will not arrive");
                }
                c.connected.store(true, Ordering::SeqCst);
                c.down_since_ms.store(0, Ordering::SeqCst);
                c.link_up.notify_waiters();
            }
            Ok(MqttEvent::Outgoing(Outgoing::Publish(pkid))) => {
                let mut g = gate.lock().unwrap();
                match g.fifo.pop_front() {
                    Some(Some(row)) if pkid != 0 => {
                        g.inflight.insert(pkid, row);
                    }
                    Some(_) => {}
                    None => tracing::error!(pkid, "a publish went out that the gate did not hand over"),
                }
            }
            Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                c.acked.fetch_add(1, Ordering::SeqCst);
                if let Some(row) = gate.lock().unwrap().inflight.remove(&ack.pkid) {
                    let _ = notes.send(LinkNote::Acked(row));
                }
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) if p.topic == cmd_topic => {
                if commands.try_send(p.payload.to_vec()).is_err() {
                    tracing::warn!("too many commands waiting: one was dropped unread");
                }
            }
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => {
                gate.lock().unwrap().live = false;
                c.connected.store(false, Ordering::SeqCst);
                return;
            }
            Ok(_) => {}
            Err(e) => {
                // Close the gate first, then discard everything rumqttc still holds of this
                // session (delivery.md, M4): what was not acknowledged is sent again from the
                // outbox in the next session.
                {
                    let mut g = gate.lock().unwrap();
                    g.live = false;
                    g.fifo.clear();
                    g.inflight.clear();
                }
                el.clean();
                el.pending.clear();
                el.state.events.clear();
                let failures = c.failures.fetch_add(1, Ordering::Relaxed);
                let _ = c.down_since_ms.compare_exchange(
                    0,
                    crate::record::now_ms().max(1) as u64,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                if c.connected.swap(false, Ordering::SeqCst) {
                    // unacknowledged publishes are settled: the outbox sends its rows again
                    c.acked.store(c.submitted.load(Ordering::SeqCst), Ordering::SeqCst);
                    tracing::warn!(broker = %url, error = %e, "lost the MQTT broker; events wait in the outbox until it returns");
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

/// The TLS settings for an mqtts:// broker: the CA file the config names, else the system bundle;
/// with the box's certificate (`identity/tls.crt`, and `tls.key`) as client certificate when the
/// technician has installed it (mutual TLS).
pub fn tls_configuration(cfg: &MqttConfig, identity_dir: &std::path::Path) -> anyhow::Result<TlsConfiguration> {
    let ca = match &cfg.ca_file {
        Some(p) => std::fs::read(p).map_err(|e| {
            anyhow::anyhow!("mqtt.ca_file {} cannot be read ({e}); it must hold the broker's CA certificate in PEM", p.display())
        })?,
        None => std::fs::read(SYSTEM_CA_BUNDLE).map_err(|e| {
            anyhow::anyhow!("mqtt.url is mqtts:// but the CA bundle {SYSTEM_CA_BUNDLE} cannot be read ({e}); install ca-certificates or set mqtt.ca_file")
        })?,
    };
    let cert_path = identity_dir.join(vakt_identity::TLS_CERT_FILE);
    let client_auth = if cert_path.is_file() {
        let cert = std::fs::read(&cert_path)
            .map_err(|e| anyhow::anyhow!("the box certificate {} cannot be read ({e})", cert_path.display()))?;
        anyhow::ensure!(
            String::from_utf8_lossy(&cert).contains("-----BEGIN CERTIFICATE-----"),
            "the box certificate {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            cert_path.display()
        );
        let key_path = identity_dir.join(vakt_identity::TLS_KEY_FILE);
        let key = std::fs::read(&key_path).map_err(|e| {
            anyhow::anyhow!(
                "the box's TLS key {} cannot be read ({e}); `vakt provision --force` makes a new identity (the CA must then sign the new tls.csr)",
                key_path.display()
            )
        })?;
        Some((cert, key))
    } else {
        None
    };
    Ok(TlsConfiguration::Simple { ca, alpn: None, client_auth })
}
