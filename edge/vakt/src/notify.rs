//! systemd integration: readiness (`READY=1`), status text, and a watchdog that is fed only while
//! the box makes progress (frames arrive or the camera is being reconnected, analysis keeps up,
//! the publisher runs), so a stalled pipeline gets restarted by systemd (`WatchdogSec=`).
//! Protocol: sd_notify(3) datagrams to `$NOTIFY_SOCKET`; nothing happens without it.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to the service manager, if there is one.
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    /// Half of `$WATCHDOG_USEC`, when the watchdog is enabled for this process.
    pub watchdog_interval: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            let p = p.to_string_lossy().into_owned();
            let addr = if let Some(name) = p.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&p).ok()?
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        // WATCHDOG_PID, when set, must be ours (sd_watchdog_enabled(3)).
        let for_us = std::env::var("WATCHDOG_PID").map(|p| p == std::process::id().to_string()).unwrap_or(true);
        let watchdog_interval = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(|u| Duration::from_micros(u / 2));
        Notifier { socket, watchdog_interval }
    }

    pub fn send(&self, msg: &str) {
        if let Some((s, addr)) = &self.socket
            && let Err(e) = s.send_to_addr(msg.as_bytes(), addr)
        {
            tracing::debug!(error = %e, "cannot notify the service manager");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }
}

/// Progress counters sampled at each watchdog tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Frames delivered by capture.
    pub frames_in: u64,
    /// Capture supervisor iterations (bus polls, reconnect waits): it is alive.
    pub capture_beats: u64,
    /// Messages handled by the analysis thread.
    pub analysed: u64,
    /// Publisher loop iterations.
    pub publisher_beats: u64,
}

/// Whether the box made progress between two samples (design: `edge/docs/design/events.md`,
/// "Watchdog"). Frames arriving is progress only if analysis handles them; no frames is fine
/// while the capture supervisor is alive (the camera is being reconnected); the publisher must
/// always be running.
pub fn made_progress(before: Progress, now: Progress) -> bool {
    let capture = now.frames_in > before.frames_in || now.capture_beats > before.capture_beats;
    let analysis = now.frames_in == before.frames_in || now.analysed > before.analysed;
    let publisher = now.publisher_beats > before.publisher_beats;
    capture && analysis && publisher
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_table() {
        let p = |f, c, a, b| Progress { frames_in: f, capture_beats: c, analysed: a, publisher_beats: b };
        let before = p(100, 50, 100, 20);
        let cases = [
            ("frames flow and are analysed", p(110, 55, 110, 24), true),
            ("camera lost, supervisor reconnecting", p(100, 60, 100, 24), true),
            ("frames arrive but analysis is stuck", p(110, 55, 100, 24), false),
            ("capture thread dead", p(100, 50, 100, 24), false),
            ("publisher stuck", p(110, 55, 110, 20), false),
        ];
        for (what, now, want) in cases {
            assert_eq!(made_progress(before, now), want, "{what}");
        }
    }
}

/// Machine figures for the health message: the process's CPU time, the hottest thermal zone and
/// the state directory's file system.
pub mod machine {
    use std::path::Path;

    /// CPU seconds (user + system) this process has used, from /proc/self/stat.
    pub fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // fields after the command name, which is in parentheses and may hold spaces
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
        // SAFETY: sysconf only reads a system constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (ticks > 0.0).then(|| (utime + stime) / ticks)
    }

    /// The hottest thermal zone in °C, where the board exposes any.
    pub fn temperature_c() -> Option<f64> {
        let zones = std::fs::read_dir("/sys/class/thermal").ok()?;
        zones
            .filter_map(|z| z.ok())
            .filter(|z| z.file_name().to_string_lossy().starts_with("thermal_zone"))
            .filter_map(|z| std::fs::read_to_string(z.path().join("temp")).ok()?.trim().parse::<f64>().ok())
            .map(|milli| milli / 1000.0)
            .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))))
    }

    /// (bytes free for this user, total bytes) of the file system holding `dir`.
    pub fn disk(dir: &Path) -> Option<(u64, u64)> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs writes into the zeroed struct we own; the path is a valid C string.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return None;
        }
        let bs = s.f_frsize as u64;
        Some((s.f_bavail as u64 * bs, s.f_blocks as u64 * bs))
    }
}
