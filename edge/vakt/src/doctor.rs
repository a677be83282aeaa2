//! `vakt doctor`: checks a box in the field and says, in plain words, what is wrong and what to
//! do. Every check runs even when an earlier one fails. Exit 0 when nothing failed (warnings
//! allowed), 1 otherwise. Guide: `edge/docs/guide/technician.md`.

use std::path::Path;
use std::time::{Duration, Instant};

use vakt_core::config::{Config, MqttScheme};
use vakt_core::hardware::KeyProvider;
use vakt_core::models::{self, FileOutcome};
use vakt_core::source::{SourceSpec, without_credentials};
use vakt_media::{Capture, CaptureConfig, CaptureMsg, Pacing, Recovery};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// One check's outcome: what was found, and what to do about it.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check { name, verdict: Verdict::Ok, detail: detail.into(), fix: None }
    }
    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name, verdict: Verdict::Warn, detail: detail.into(), fix: Some(fix.into()) }
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { name, verdict: Verdict::Fail, detail: detail.into(), fix: Some(fix.into()) }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DoctorOptions {
    /// How long the camera may take to deliver its first frame.
    pub camera_timeout: Duration,
    /// How long the broker may take to accept the connection.
    pub broker_timeout: Duration,
    /// Fault injection for tests: treat the clock as unsynchronised.
    pub fault_clock_unsynced: bool,
}

/// Runs every check, in the order a technician would fix things.
pub fn run(cfg: &Config, opts: &DoctorOptions) -> Vec<Check> {
    let mut out = vec![Check::ok(
        "config",
        format!(
            "valid: box {} at site {}, board profile {}, digest {}",
            cfg.box_.id,
            cfg.box_.site,
            cfg.hardware.origin,
            &cfg.digest[..12]
        ),
    )];
    out.push(identity(cfg));
    out.extend(elements(cfg));
    out.push(camera(cfg, opts.camera_timeout));
    out.push(broker(cfg, opts.broker_timeout));
    out.push(clock(opts.fault_clock_unsynced));
    // The state directory holds the outbox, which may grow to its bound while the broker is away;
    // the ring buffer sizes itself to the space it finds, so it needs only the floor.
    out.push(disk(&cfg.box_.state_dir, DISK_FLOOR + cfg.mqtt.outbox_max_bytes));
    if cfg.storage.record && !cfg.storage.dir.starts_with(&cfg.box_.state_dir) {
        out.push(disk(&cfg.storage.dir, DISK_FLOOR));
    }
    out.extend(model_checks(cfg));
    out.push(key_provider(cfg));
    if let Some(h) = &cfg.tamper.housing {
        out.push(if h.chip.exists() {
            Check::ok("housing", format!("switch on {} line {}", h.chip.display(), h.line))
        } else {
            Check::fail(
                "housing",
                format!("the housing switch's GPIO chip {} does not exist", h.chip.display()),
                "check tamper.housing.chip against `ls /dev/gpiochip*` (or the board profile's housing_switch)",
            )
        });
    }
    out
}

/// Prints the checks for a technician; returns true when none failed.
pub fn print(checks: &[Check]) -> bool {
    for c in checks {
        let tag = match c.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        println!("{tag}  {:<9} {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            println!("      {:<9} -> {fix}", "");
        }
    }
    let fails = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    let warns = checks.iter().filter(|c| c.verdict == Verdict::Warn).count();
    match (fails, warns) {
        (0, 0) => println!("all {} checks passed", checks.len()),
        (0, w) => println!("no failures; {w} warning(s)"),
        (f, w) => println!("{f} check(s) failed, {w} warning(s): fix the FAIL lines first, top to bottom"),
    }
    fails == 0
}

fn identity(cfg: &Config) -> Check {
    let dir = cfg.box_.state_dir.join("identity");
    if !dir.join(vakt_identity::SIGNING_KEY_FILE).exists() {
        return Check::warn(
            "identity",
            format!("no box identity in {}", dir.display()),
            "run `vakt provision` and send the certificate request to the municipality's CA",
        );
    }
    match vakt_identity::Identity::load(&dir) {
        Ok(id) if id.box_id() == cfg.box_.id => {
            Check::ok("identity", format!("box {} key {}", id.box_id(), id.key_id()))
        }
        Ok(id) => Check::fail(
            "identity",
            format!("the identity in {} belongs to box {}, but box.id is {}", dir.display(), id.box_id(), cfg.box_.id),
            "set box.id back, or re-provision with `vakt provision --force` (the old certificate stops working)",
        ),
        Err(e) => Check::fail(
            "identity",
            format!("the identity in {} cannot be used: {e}", dir.display()),
            "re-provision with `vakt provision --force` and have the new certificate request signed",
        ),
    }
}

fn elements(cfg: &Config) -> Vec<Check> {
    let g = &cfg.hardware.profile.gstreamer;
    let pkgs = |p: &[String]| {
        if p.is_empty() { " (see the board profile's notes)".to_string() } else { format!(": {}", p.join(" ")) }
    };
    let mut out = Vec::new();
    let uses_camera = matches!(cfg.source.spec, SourceSpec::Camera { .. });
    if !vakt_media::elements::available(&g.camera_source) {
        let detail = format!("the board's camera element {} is not installed", g.camera_source);
        let fix = format!("install the board's camera packages{}", pkgs(&g.camera_packages));
        out.push(if uses_camera { Check::fail("elements", detail, fix) } else { Check::warn("elements", detail, fix) });
    }
    let missing: Vec<&String> = g.decoders.iter().filter(|d| !vakt_media::elements::available(d)).collect();
    if !missing.is_empty() {
        out.push(Check::warn(
            "elements",
            format!(
                "hardware decoder(s) {} not installed: decoding runs in software",
                missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
            "install the board vendor's GStreamer plugins (see the board profile's notes)",
        ));
    }
    if !vakt_media::elements::available(&g.encoder) {
        let detail = format!("the recording encoder {} is not installed", g.encoder);
        let fix = format!("install the encoder's packages{}", pkgs(&g.encoder_packages));
        out.push(if cfg.storage.record {
            Check::fail("elements", detail, fix)
        } else {
            Check::warn("elements", format!("{detail} (recording is off)"), fix)
        });
    }
    if out.is_empty() {
        out.push(Check::ok(
            "elements",
            format!(
                "camera {}, encoder {}{}{}",
                g.camera_source,
                g.encoder,
                if g.encoder_hardware { " (hardware)" } else { " (software)" },
                if g.decoders.is_empty() { String::new() } else { format!(", decoders {}", g.decoders.join(", ")) }
            ),
        ));
    }
    out
}

fn camera(cfg: &Config, timeout: Duration) -> Check {
    let shown = without_credentials(&cfg.source.uri);
    let fix = match &cfg.source.spec {
        SourceSpec::Rtsp { .. } => {
            "check source.uri, the camera's power and network cable, and its user name and password".to_string()
        }
        SourceSpec::File { .. } | SourceSpec::ImageSequence { .. } => {
            "check that source.uri names a readable video file".into()
        }
        SourceSpec::V4l2 { .. } | SourceSpec::Camera { .. } => {
            "check the camera cable and `ls /dev/video*`; the service user needs the video group".into()
        }
        SourceSpec::TestPattern { .. } => "the GStreamer base plugins are missing (gstreamer1.0-plugins-base)".into(),
    };
    let started = Instant::now();
    let capture = Capture::start(CaptureConfig {
        source: cfg.source.spec.clone(),
        privacy: cfg.privacy.polygons(),
        analysis_width: cfg.motion.width,
        colour: false,
        full_frames: false,
        pacing: Pacing::Live,
        recovery: Recovery::Stop,
        loop_stored: false,
        stall_timeout: timeout,
        queue: 2,
        camera_element: cfg.hardware.profile.gstreamer.camera_source.clone(),
    });
    let mut capture = match capture {
        Ok(c) => c,
        Err(e) => return Check::fail("camera", format!("{shown}: {e}"), fix),
    };
    let rx = capture.receiver().clone();
    let deadline = started + timeout;
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(CaptureMsg::Frame(f)) => {
                let (w, h) = f.source_size();
                break Check::ok(
                    "camera",
                    format!("{shown}: first frame {w}x{h} after {:.1} s", started.elapsed().as_secs_f64()),
                );
            }
            Ok(CaptureMsg::Failed(e)) => break Check::fail("camera", format!("{shown}: {e}"), fix),
            Ok(CaptureMsg::SignalLost { reason, .. }) => {
                break Check::fail("camera", format!("{shown}: {reason}"), fix);
            }
            Ok(CaptureMsg::EndOfStream) => break Check::fail("camera", format!("{shown}: ended before a frame"), fix),
            Ok(CaptureMsg::SignalRestored { .. }) | Ok(CaptureMsg::Full(_)) => continue,
            Err(_) => {
                break Check::fail("camera", format!("{shown}: no frame within {} s", timeout.as_secs()), fix);
            }
        }
    };
    capture.stop();
    result
}

fn broker(cfg: &Config, timeout: Duration) -> Check {
    let m = &cfg.mqtt;
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return Check::fail("broker", format!("cannot start the network runtime: {e}"), "report this bug"),
    };
    let mut opts = rumqttc::MqttOptions::new(format!("{}-doctor", cfg.box_.id), m.host.clone(), m.port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_clean_session(true);
    if m.scheme == MqttScheme::Tls {
        match crate::mqtt::tls_configuration(m, &cfg.box_.state_dir.join("identity")) {
            Ok(t) => {
                opts.set_transport(rumqttc::Transport::Tls(t));
            }
            Err(e) => return Check::fail("broker", format!("{e:#}"), "set mqtt.ca_file to the broker CA's PEM file"),
        }
    }
    let outcome = rt.block_on(async {
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
        let r = tokio::time::timeout(timeout, async {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => continue,
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        // send DISCONNECT so the broker logs a clean goodbye, not a dropped client
        if r.as_ref().is_ok_and(|c| c.is_ok()) && client.try_disconnect().is_ok() {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), async { while eventloop.poll().await.is_ok() {} }).await;
        }
        r
    });
    let at = format!("{}:{}", m.host, m.port);
    let tls = if m.scheme == MqttScheme::Tls { "TLS" } else { "plaintext" };
    match outcome {
        Ok(Ok(())) if m.scheme == MqttScheme::Tls => {
            Check::ok("broker", format!("{} accepted the connection over TLS (server certificate verified)", at))
        }
        Ok(Ok(())) => Check::warn(
            "broker",
            format!("{at} accepted the connection, in plaintext"),
            "use mqtts:// (TLS) outside a trusted test network",
        ),
        Err(_) => Check::fail(
            "broker",
            format!("{at} did not answer within {} s ({tls})", timeout.as_secs()),
            "check mqtt.url, the network route and firewall to the broker",
        ),
        Ok(Err(e)) => {
            let text = e.to_string();
            let fix = match &e {
                rumqttc::ConnectionError::Tls(_) => {
                    "the broker's certificate is not trusted or does not name this host: check mqtt.url's host name and mqtt.ca_file".to_string()
                }
                rumqttc::ConnectionError::ConnectionRefused(_) => {
                    "the broker refused this box: check its certificate or account on the broker (ACL)".to_string()
                }
                rumqttc::ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                    "nothing listens at that address: check mqtt.url's host and port, and that the broker runs".to_string()
                }
                _ => "check mqtt.url, DNS and the network route to the broker".to_string(),
            };
            Check::fail("broker", format!("{at} ({tls}): {text}"), fix)
        }
    }
}

/// What the kernel and the time daemon say about the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockState {
    /// `ntp_adjtime` returned `TIME_ERROR` or set `STA_UNSYNC`: no daemon disciplines the clock.
    pub kernel_unsynced: bool,
    /// systemd-timesyncd's flag file exists.
    pub timesyncd_synced: bool,
    /// The year, as a sanity check (a board without an RTC boots in 1970).
    pub year: i32,
}

/// The clock verdict from its state (pure, table-tested).
pub fn judge_clock(s: ClockState) -> Check {
    if s.year < 2025 {
        return Check::fail(
            "clock",
            format!("the clock says the year is {}: it was never set", s.year),
            "connect the box to a network with NTP (systemd-timesyncd or chrony) and wait for sync; events need true time",
        );
    }
    if s.kernel_unsynced && !s.timesyncd_synced {
        return Check::fail(
            "clock",
            "the clock is not synchronised (no NTP daemon has disciplined it)",
            "enable time sync: `timedatectl set-ntp true` (or chrony) and allow UDP 123 to the municipality's NTP server",
        );
    }
    Check::ok("clock", "synchronised")
}

/// Whether the clock is synchronised now (health message `clock_synced`).
pub fn clock_synced() -> bool {
    judge_clock(clock_state(false)).verdict == Verdict::Ok
}

fn clock(fault_unsynced: bool) -> Check {
    judge_clock(clock_state(fault_unsynced))
}

fn clock_state(fault_unsynced: bool) -> ClockState {
    let year = time::OffsetDateTime::now_utc().year();
    // SAFETY: ntp_adjtime with modes = 0 only reads the kernel's clock state into `tx`.
    let (ret, status) = unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        let r = libc::ntp_adjtime(&mut tx);
        (r, tx.status)
    };
    let kernel_unsynced = fault_unsynced || ret == libc::TIME_ERROR || ret < 0 || status & libc::STA_UNSYNC != 0;
    let timesyncd_synced = !fault_unsynced && Path::new("/run/systemd/timesync/synchronized").exists();
    ClockState { kernel_unsynced, timesyncd_synced, year }
}

/// Free space below which a directory of the box fails `disk`: room for the databases, the audit
/// log and a few recorded segments. An absolute figure, not a share: the ring buffer takes 80 % of
/// what it finds, so a big card with a few GiB free is healthy and a share would fail it.
const DISK_FLOOR: u64 = 256 << 20;

fn disk(dir: &Path, need: u64) -> Check {
    let fix_dir = format!(
        "{} must be a writable directory (box.state_dir, storage.dir; systemd's StateDirectory=vakt makes /var/lib/vakt)",
        dir.display()
    );
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Check::fail("disk", format!("cannot create {}: {e}", dir.display()), fix_dir);
    }
    let probe = dir.join(".doctor-probe");
    let written = (|| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(&[0u8; 4096])?;
        f.sync_all()?;
        std::fs::remove_file(&probe)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&probe);
        return Check::fail("disk", format!("cannot write and sync a file in {}: {e}", dir.display()), fix_dir);
    }
    match free_bytes(dir) {
        Some((free, total)) => {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            let detail = format!("{} writable; {:.1} GiB free of {:.1} GiB", dir.display(), gib(free), gib(total));
            if free < need {
                Check::fail(
                    "disk",
                    format!("{detail}, less than the {} MiB the box needs here", need >> 20),
                    "free space on this file system (or move box.state_dir to one with room): the box's records need it",
                )
            } else {
                Check::ok("disk", detail)
            }
        }
        None => Check::ok("disk", format!("{} writable", dir.display())),
    }
}

fn free_bytes(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into `s`, which outlives the call; `c` is a valid C string.
    unsafe {
        let mut s: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut s) != 0 {
            return None;
        }
        Some((s.f_bavail as u64 * s.f_frsize as u64, s.f_blocks as u64 * s.f_frsize as u64))
    }
}

fn model_checks(cfg: &Config) -> Vec<Check> {
    let dir = &cfg.models.dir;
    let fix = format!(
        "reinstall the vakt package, or fill the directory with `models/fetch.sh {}` (it verifies checksums)",
        dir.display()
    );
    let mut bad = Vec::new();
    let mut ok = Vec::new();
    for m in models::builtin() {
        let checks = models::verify(dir, &m);
        let problems: Vec<String> = checks
            .iter()
            .filter_map(|c| match &c.outcome {
                FileOutcome::Ok => None,
                FileOutcome::Missing => Some(format!("{} is missing", c.path.display())),
                FileOutcome::Unreadable(e) => Some(format!("{} cannot be read ({e})", c.path.display())),
                FileOutcome::Mismatch { expected, actual } => Some(format!(
                    "{} has sha256 {}…, expected {}… (damaged or replaced)",
                    c.path.display(),
                    &actual[..12],
                    &expected[..12]
                )),
            })
            .collect();
        if problems.is_empty() {
            ok.push(m.name.clone());
        } else {
            bad.push(Check::fail("models", format!("{}: {}", m.name, problems.join("; ")), fix.clone()));
        }
    }
    if bad.is_empty() {
        vec![Check::ok("models", format!("{} verified in {}", ok.join(", "), dir.display()))]
    } else {
        bad
    }
}

fn key_provider(cfg: &Config) -> Check {
    let k = &cfg.hardware.profile.keys;
    match k.provider {
        KeyProvider::Ram => Check::ok(
            "keys",
            "footage keys are held in RAM only (board profile): after a power cut, recorded footage cannot be read",
        ),
        KeyProvider::Credential => {
            let path =
                std::env::var_os("CREDENTIALS_DIRECTORY").map(|d| Path::new(&d).join(crate::record::CREDENTIAL_NAME));
            match path {
                Some(p) if p.is_file() => {
                    Check::ok("keys", format!("footage key credential present ({})", p.display()))
                }
                _ => Check::fail(
                    "keys",
                    format!(
                        "the board profile keeps footage keys in the systemd credential {}, which this process was not given",
                        crate::record::CREDENTIAL_NAME
                    ),
                    format!(
                        "seal one with `systemd-creds encrypt --with-key=tpm2 --name={0} <(head -c32 /dev/urandom) /etc/credstore.encrypted/{0}` and add `LoadCredentialEncrypted={0}:/etc/credstore.encrypted/{0}` to the unit (technician guide, section 13)",
                        crate::record::CREDENTIAL_NAME
                    ),
                ),
            }
        }
        KeyProvider::Tpm2 => {
            let tcti = k.tcti();
            match vakt_store::tpm::Tpm2Provider::open(&tcti, vakt_store::tpm::DEFAULT_NV_INDEX) {
                Ok(p) => Check::ok(
                    "keys",
                    format!(
                        "footage journal key in TPM 2.0 NV index 0x{:08X} ({tcti}){}",
                        vakt_store::tpm::DEFAULT_NV_INDEX,
                        if p.created { ", made now (first use of this TPM)" } else { "" }
                    ),
                ),
                Err(e) => Check::fail(
                    "keys",
                    format!("the board profile keeps the footage journal key in a TPM 2.0, which cannot be used: {e}"),
                    format!(
                        "check that {} exists and the user vakt may open it (group tss), and that tpm2-tools is installed; or set keys.tcti in a custom board profile",
                        k.device
                    ),
                ),
            }
        }
        p @ (KeyProvider::Rpmb | KeyProvider::Otp) => Check::warn(
            "keys",
            format!(
                "the board profile names the {} key provider, which this version does not build: footage keys are held in RAM only, so recorded footage cannot be read after a power cut",
                p.as_str()
            ),
            "use provider \"credential\" (a TPM-sealed systemd credential) in a custom board profile to keep footage across power cuts",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_verdicts() {
        let s = |kernel_unsynced, timesyncd_synced, year| ClockState { kernel_unsynced, timesyncd_synced, year };
        assert_eq!(judge_clock(s(false, false, 2026)).verdict, Verdict::Ok);
        assert_eq!(judge_clock(s(true, true, 2026)).verdict, Verdict::Ok);
        let c = judge_clock(s(true, false, 2026));
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.fix.unwrap().contains("set-ntp"));
        let c = judge_clock(s(false, true, 1970));
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.detail.contains("1970"));
    }

    /// The floor is an amount, not a share of the file system: measured on the real one here.
    #[test]
    fn disk_fails_below_what_the_box_needs_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let (free, _) = free_bytes(dir.path()).unwrap();
        assert_eq!(disk(dir.path(), free / 2).verdict, Verdict::Ok);
        let c = disk(dir.path(), free + (1 << 40));
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.detail.contains(&format!("less than the {} MiB the box needs here", (free + (1 << 40)) >> 20)),
            "{}",
            c.detail
        );
    }
}
