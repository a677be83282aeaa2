//! systemd readiness and watchdog, against a NOTIFY_SOCKET the test owns (PID 1 here is not
//! systemd): READY=1 once running, WATCHDOG=1 while the pipeline makes progress, none once
//! analysis stalls, STOPPING=1 on shutdown.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use support::*;

/// Starts the box with a notify socket and the watchdog at 1 s (fed every 0.5 s); collects
/// (seconds since start, message) for `secs`, then stops the box.
fn run_notified(extra_args: &[&str], secs: f64) -> Vec<(f64, String)> {
    let broker = Mosquitto::start();
    let cfg = TestConfig::new(&broker.url(), "test://ball?width=160&height=120&fps=15", "");
    let sock_path = cfg.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut child = vakt()
        .arg("--config")
        .arg(&cfg.path)
        .arg("run")
        .args(extra_args)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let mut stopped = false;
    while start.elapsed().as_secs_f64() < secs + 10.0 {
        if !stopped && start.elapsed().as_secs_f64() >= secs {
            std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
            stopped = true;
        }
        if let Ok(n) = sock.recv(&mut buf) {
            got.push((start.elapsed().as_secs_f64(), String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
        if stopped && child.try_wait().unwrap().is_some() {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    got
}

fn pings(got: &[(f64, String)]) -> Vec<f64> {
    got.iter().filter(|(_, m)| m == "WATCHDOG=1").map(|(t, _)| *t).collect()
}

#[test]
fn ready_then_watchdog_while_progressing_then_stopping() {
    let got = run_notified(&[], 4.0);
    assert!(got.first().is_some_and(|(_, m)| m.starts_with("READY=1")), "{got:?}");
    let p = pings(&got);
    assert!(p.len() >= 5, "a healthy box feeds the watchdog every 0.5 s: {got:?}");
    assert!(got.iter().any(|(_, m)| m.starts_with("STOPPING=1")), "{got:?}");
}

#[test]
fn a_stalled_analysis_starves_the_watchdog() {
    // the test pattern's media time starts at 0: analysis stalls 2 s in
    let got = run_notified(&["--fault-stall-analysis-after", "2"], 6.0);
    assert!(got.first().is_some_and(|(_, m)| m.starts_with("READY=1")), "{got:?}");
    let p = pings(&got);
    assert!(!p.is_empty(), "pings before the stall: {got:?}");
    let last = *p.last().unwrap();
    // fed until about 2 s (plus start-up), then silence for the remaining seconds
    assert!(last < 4.5, "the watchdog was still fed at {last} s: {got:?}");
    assert!(p.iter().filter(|&&t| t > 4.5).count() == 0, "{got:?}");
}
