//! The embedded development broker (rumqttd), bound to loopback only. It exists so that the
//! embedded default runs with no setup; the packaged config never enables it (`config.md`).

use std::collections::HashMap;
use std::net::SocketAddr;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Starts the broker on its own thread. Refuses anything but a loopback address.
pub fn start(listen: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(listen.ip().is_loopback(), "the embedded broker binds to loopback only, not {listen}");
    // Fail early and clearly if the port is taken (rumqttd would only log it on its thread).
    std::net::TcpListener::bind(listen).map_err(|e| {
        anyhow::anyhow!("cannot listen on {listen} for the embedded broker: {e} (is another broker running there?)")
    })?;
    let server = ServerSettings {
        name: "vakt-embedded".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: 256 * 1024,
            max_inflight_count: 200,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 200,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 4,
            ..Default::default()
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        ..Default::default()
    };
    std::thread::Builder::new().name("embedded-broker".into()).spawn(move || {
        let mut broker = Broker::new(config);
        if let Err(e) = broker.start() {
            tracing::error!(error = %e, "embedded broker stopped");
        }
    })?;
    tracing::warn!(%listen, "embedded development broker running (loopback only; not for production)");
    Ok(())
}
