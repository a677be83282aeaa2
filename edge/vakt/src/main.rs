//! The `vakt` binary: one program, several subcommands. Errors are reported as a chain a
//! technician can act on; exit codes: 0 ok, 1 runtime failure, 2 bad config or arguments.

mod analysis;
mod analyze;
mod broker;
mod commands;
mod commission;
mod control;
mod decommission;
mod doctor;
mod export;
mod housing;
mod mqtt;
mod notify;
mod objects;
mod onvif;
mod outbox;
mod record;
mod redact;
mod redaction;
mod run;
mod scene;
mod signing;
mod tail;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use vakt_core::config::{self, Config};

#[derive(Parser)]
#[command(name = "vakt", version, about = "Privacy-first edge video analytics for public-space cameras")]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "/etc/vakt/vakt.toml", env = "VAKT_CONFIG")]
    config: PathBuf,
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "debug,rumqttd=warn".
    #[arg(long, global = true, env = "VAKT_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the box: capture, mask, detect, publish events.
    Run {
        /// Also print every published event as one JSON line on standard output.
        #[arg(long)]
        print_events: bool,
        /// Fault injection for tests: analysis stops handling frames once the media time passes
        /// SECONDS, so the watchdog must starve.
        #[arg(long, hide = true, value_name = "SECONDS")]
        fault_stall_analysis_after: Option<f64>,
        /// Fault injection for tests: every object detector run sleeps MS first.
        #[arg(long, hide = true, value_name = "MS", default_value_t = 0)]
        fault_detector_delay: u64,
        /// Fault injection for tests: object detector runs after the first RUNS fail.
        #[arg(long, hide = true, value_name = "RUNS")]
        fault_detector_fail_after: Option<u64>,
        /// Fault injection for tests: the clock-jump check sees the wall clock one hour ahead
        /// from this many seconds after the start.
        #[arg(long, hide = true, value_name = "SECONDS")]
        fault_clock_jump_after: Option<u64>,
    },
    /// Replay a video file through the box's pipeline, deterministically, on its media clock.
    Analyze {
        /// Video file, or an image sequence such as dir/in%06d.jpg.
        #[arg(long)]
        input: String,
        /// Where to write the events, one JSON object per line (the MQTT schema).
        #[arg(long)]
        events: PathBuf,
        /// Write each frame's foreground mask as DIR/000001.png (255 = moving).
        #[arg(long)]
        motion_masks: Option<PathBuf>,
        /// Write the tracked objects, one JSON line per decoded frame: {"frame": N (from 1),
        /// "objects": [{"track", "class", "score", "box": [left, top, width, height], "coasting"}]}
        /// with boxes in input pixels. Needs `[detect] enabled`.
        #[arg(long, value_name = "OUT.jsonl")]
        tracks: Option<PathBuf>,
        /// Wall-clock time that media time 0 stands for (RFC 3339); events are stamped relative to it.
        #[arg(long, default_value = "1970-01-01T00:00:00Z")]
        start_time: String,
        /// Scene reference for tamper detection (a box's scene-reference.json); without it the
        /// reference is learned from the first `tamper.reference_time` of the input.
        #[arg(long)]
        scene_reference: Option<PathBuf>,
    },
    /// Write a video redacted exactly as the box releases pictures: static masks, people and
    /// unexplained motion masked, whole frames masked while detection results are too old.
    Redact {
        /// Video file, or an image sequence such as dir/in%06d.jpg.
        #[arg(long)]
        input: String,
        /// The redacted video (MP4, H.264), one frame for each input frame.
        #[arg(long, value_name = "OUT.mp4")]
        output: PathBuf,
        /// Subject access: keep this track visible and mask everyone else. Take the id from
        /// `vakt redact --tracks` with the same config and input (`vakt analyze` runs the detector
        /// on another schedule, so its ids can differ).
        #[arg(long, value_name = "ID")]
        keep_track: Option<u64>,
        /// Write the tracked objects, as `vakt analyze --tracks` does.
        #[arg(long, value_name = "OUT.jsonl")]
        tracks: Option<PathBuf>,
        /// Write each frame's dynamic mask as DIR/000001.png (255 = masked), at the video's size.
        #[arg(long, value_name = "DIR")]
        masks: Option<PathBuf>,
        /// Fault injection: detector results reach the masker MS of media time after their frame.
        #[arg(long, value_name = "MS", default_value_t = 0.0)]
        detector_delay: f64,
        /// Fault injection: no detector result from SECONDS of media time on reaches the masker.
        #[arg(long, value_name = "SECONDS")]
        detector_stop_at: Option<f64>,
    },
    /// Learn the scene reference for tamper detection, once the camera is aimed (audited).
    Commission {
        /// Replace an existing reference after a deliberate re-aim.
        #[arg(long)]
        force: bool,
    },
    /// Validate the configuration file and print a summary.
    CheckConfig,
    /// Check this box in the field: camera, broker (TLS), clock, disk, models, key provider, board
    /// elements. Each failing check says what is wrong and what to do; exit 1 if any failed.
    Doctor {
        /// Seconds the camera may take to deliver its first frame.
        #[arg(long, default_value_t = 15)]
        camera_timeout: u64,
        /// Seconds the broker may take to accept the connection.
        #[arg(long, default_value_t = 10)]
        broker_timeout: u64,
        /// Fault injection for tests: report the clock as unsynchronised.
        #[arg(long, hide = true)]
        fault_clock_unsynced: bool,
    },
    /// Create this box's identity: Ed25519 signing key, TLS key and certificate request.
    Provision {
        /// Replace an existing identity (the old keys stop working).
        #[arg(long)]
        force: bool,
    },
    /// The keys allowed to sign commands to this box, with their roles.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Consume the events topic as the police's integration would.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// The append-only audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Export recorded footage as a signed clip (audited): redacted by default, one person kept
    /// visible with --keep-track, static masks only with --unmasked --reason. Or list the tracks of
    /// a range with --list-tracks (ids, classes, times, zones; no images).
    Export {
        /// Start of the range (RFC 3339, e.g. 2026-11-23T14:05:00Z).
        #[arg(long)]
        from: String,
        /// End of the range (RFC 3339).
        #[arg(long)]
        to: String,
        /// New directory for clip.mp4, manifest.json, manifest.sig and the box's public key.
        #[arg(long, required_unless_present = "list_tracks")]
        output: Option<PathBuf>,
        /// Who asked for it (a person, unit or case number): audited and signed into the manifest.
        #[arg(long)]
        requester: String,
        /// Subject access: keep this track (from --list-tracks) visible and mask everyone else.
        #[arg(long, value_name = "ID")]
        keep_track: Option<u64>,
        /// Static masks only: everyone in the footage is visible. Needs --reason.
        #[arg(long)]
        unmasked: bool,
        /// Why the footage is released unmasked (audited and signed into the manifest).
        #[arg(long)]
        reason: Option<String>,
        /// List the tracks recorded in the range instead of exporting (audited).
        #[arg(long)]
        list_tracks: bool,
    },
    /// Check an export: the manifest's signature with the box's key, then the clip's hash.
    VerifyExport {
        /// The export directory.
        dir: PathBuf,
        /// The box's public key (box-signing.pub from a trusted source); on the box itself its own key.
        #[arg(long, value_name = "KEY.pub")]
        trust: Option<PathBuf>,
    },
    /// Keep a range of footage beyond retention (audited), list holds, or release one.
    Hold {
        /// Start of the range (RFC 3339).
        #[arg(long, required_unless_present_any = ["list", "release"])]
        from: Option<String>,
        /// End of the range (RFC 3339).
        #[arg(long, required_unless_present_any = ["list", "release"])]
        to: Option<String>,
        /// When the hold ends (RFC 3339; at most 30 days from now).
        #[arg(long, required_unless_present_any = ["list", "release"])]
        until: Option<String>,
        #[arg(long, required_unless_present = "list")]
        requester: Option<String>,
        /// Why (a case number).
        #[arg(long, required_unless_present_any = ["list", "release"])]
        reason: Option<String>,
        /// List the holds in force.
        #[arg(long)]
        list: bool,
        /// Release the hold with this id.
        #[arg(long, value_name = "ID")]
        release: Option<u64>,
    },
    /// The recording store: segments, bytes, retention, key protection, holds.
    Storage,
    /// Benchmark of the durable outbox on this disk (benches/run-delivery.sh): commits COUNT
    /// events of 600 bytes in batches of BATCH, each batch one fsynced transaction, then drains
    /// them as the sender does. Prints one JSON line.
    #[command(hide = true)]
    BenchOutbox {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 2000)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Take the box out of service: export every hold, the events the broker never acknowledged
    /// and the audit log into DIR (signed), then crypto-erase the recording store. The box must be
    /// stopped.
    Decommission {
        /// New directory (on removable media) for the exports, the audit log and the signed report.
        #[arg(long)]
        output: PathBuf,
        /// Who decommissions the box (audited, signed into the report).
        #[arg(long, default_value = "technician")]
        requester: String,
        /// Read the detection models (for masking the held exports) from DIR instead of
        /// `[models] dir`: package purge runs decommission after the package's files are gone,
        /// from a copy prerm kept.
        #[arg(long, value_name = "DIR")]
        models_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Authorise a key to sign commands, with a role (audited).
    Add {
        /// The issuer name commands carry (`issuer`).
        #[arg(long)]
        name: String,
        /// police, security_unit or administrator.
        #[arg(long)]
        role: String,
        /// The issuer's Ed25519 public key, PEM.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Who authorises it (audited).
        #[arg(long, default_value = "technician")]
        by: String,
    },
    /// List the authorised keys.
    List,
    /// Withdraw a key (audited).
    Revoke {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "technician")]
        by: String,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Subscribe to events, verify each signature against trusted box keys, de-duplicate by
    /// (box, seq) and report gaps: the reference consumer. Verified messages go to stdout.
    Tail {
        /// The broker: mqtts://host:port (or mqtt://host:port on a trusted network).
        #[arg(long)]
        url: String,
        /// Topic filter.
        #[arg(long, default_value = "vakt/+/+/events")]
        topic: String,
        /// A box's public key (its identity/signing.pub) as BOX=KEYFILE (only messages of box
        /// BOX verify with it) or KEYFILE (any box); repeat for several boxes.
        #[arg(long, required = true, value_name = "[BOX=]KEYFILE")]
        trust: Vec<String>,
        /// PEM CA file for an mqtts:// broker (default: the system's CAs).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Client certificate (PEM) for a broker that requires one (with --key).
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// The client certificate's private key (PEM).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Stop after this long (e.g. "30s"); default: until Ctrl-C.
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// A persistent session under this client id: the broker keeps messages for it while it
        /// is away.
        #[arg(long)]
        client_id: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the whole hash chain of the audit log.
    Verify,
}

/// `vakt doctor` found problems; it has printed them.
#[derive(Debug, thiserror::Error)]
#[error("some checks failed (see above)")]
struct DoctorFailed;

/// Errors that are the operator's input, not the box's failure: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{},rumqttd=off,rumqttc=warn", cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.is::<run::RestartToApply>() {
                eprintln!("vakt: {e}");
                return ExitCode::from(75);
            }
            let usage = e.chain().any(|c| c.is::<UsageError>() || c.is::<config::ConfigError>());
            eprintln!("vakt: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    Ok(config::load(path)?)
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            print_events,
            fault_stall_analysis_after,
            fault_detector_delay,
            fault_detector_fail_after,
            fault_clock_jump_after,
        } => {
            let cfg = load_config(&cli.config)?;
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(run::run(
                cfg,
                run::RunOptions {
                    print_events,
                    fault_stall_analysis_after,
                    fault_detector_delay: std::time::Duration::from_millis(fault_detector_delay),
                    fault_detector_fail_after,
                    fault_clock_jump_after,
                },
            ))
        }
        Command::Analyze { input, events, motion_masks, tracks, start_time, scene_reference } => {
            let cfg = load_config(&cli.config)?;
            let start_time = OffsetDateTime::parse(&start_time, &Rfc3339)
                .map_err(|e| UsageError(format!("--start-time {start_time:?}: not an RFC 3339 time ({e})")))?;
            let scene_reference = match scene_reference {
                None => None,
                Some(p) => {
                    let r = scene::load_reference(&p)?
                        .ok_or_else(|| UsageError(format!("--scene-reference {}: no such file", p.display())))?;
                    if let Some(why) = r.misfit(&cfg) {
                        return Err(UsageError(format!(
                            "--scene-reference {} does not fit this config: {why}",
                            p.display()
                        ))
                        .into());
                    }
                    Some(r.reference)
                }
            };
            let args = analyze::AnalyzeArgs { input, events, motion_masks, tracks, start_time, scene_reference };
            let s = analyze::analyze(&cfg, &args)?;
            eprintln!("analysed {} frames, wrote {} events to {}", s.frames, s.events, args.events.display());
            if cfg.detect.enabled {
                eprintln!("the object detector ran on {} of {} frames", s.detector_runs, s.frames);
            }
            Ok(())
        }
        Command::Redact { input, output, keep_track, tracks, masks, detector_delay, detector_stop_at } => {
            let cfg = load_config(&cli.config)?;
            let args = redact::RedactArgs {
                input,
                output,
                keep_track,
                detector_delay: detector_delay / 1000.0,
                detector_stop_at,
                masks,
                tracks,
            };
            let s = redact::redact(&cfg, &args)?;
            for span in &s.spans {
                let why = match span.reason {
                    vakt_core::redaction::FullReason::NoResult => "no detector result yet".to_string(),
                    vakt_core::redaction::FullReason::Stale => format!(
                        "detector results older than {} (stalled or slow detector)",
                        humantime::format_duration(cfg.redact.max_staleness)
                    ),
                    vakt_core::redaction::FullReason::GlobalChange => "the whole picture changed".to_string(),
                };
                eprintln!(
                    "warning: {} frames masked whole from {:.2} s to {:.2} s: {why}",
                    span.frames, span.from_s, span.to_s
                );
            }
            eprintln!(
                "redacted {} frames into {} ({} masks{}): {} masked whole, {:.1} % of all pixels masked; the object detector ran on {} frames",
                s.frames,
                args.output.display(),
                cfg.redact.mode.as_str(),
                args.keep_track.map(|t| format!(", track {t} kept visible")).unwrap_or_default(),
                s.fully_masked,
                100.0 * s.masked_share,
                s.detector_runs
            );
            Ok(())
        }
        Command::Commission { force } => {
            let cfg = load_config(&cli.config)?;
            commission::commission(&cfg, force)
        }
        Command::CheckConfig => {
            let cfg = load_config(&cli.config)?;
            println!("{}: ok", cli.config.display());
            println!(
                "  box {} at site {}, camera {} from {}",
                cfg.box_.id,
                cfg.box_.site,
                cfg.source.camera,
                vakt_core::source::without_credentials(&cfg.source.uri)
            );
            println!("  broker {} (topics under {}/)", cfg.mqtt.url, cfg.mqtt.prefix);
            if cfg.mqtt.scheme == config::MqttScheme::Plain {
                println!("  warning: plaintext MQTT; use mqtts:// outside a trusted test network");
            }
            println!(
                "  recording {}, retention {}",
                if cfg.storage.record { "ON" } else { "off" },
                humantime::format_duration(cfg.storage.max_age)
            );
            println!(
                "  {} privacy mask(s), {} motion mask(s), {} zone(s)",
                cfg.privacy.masks.len(),
                cfg.motion.masks.len(),
                cfg.zones.len()
            );
            if cfg.detect.enabled {
                println!(
                    "  object detection: {} every {} with motion or tracks, every {} otherwise; {} line(s)",
                    cfg.detect.model,
                    humantime::format_duration(cfg.detect.interval),
                    humantime::format_duration(cfg.detect.idle_interval),
                    cfg.lines.len()
                );
                let r = &cfg.redact;
                println!(
                    "  pictures leaving the box: people masked ({}), held {}, margin {}; whole frame masked when detection is older than {}",
                    r.mode.as_str(),
                    humantime::format_duration(r.hold),
                    r.margin,
                    humantime::format_duration(r.max_staleness)
                );
            } else {
                println!("  object detection off: motion and tamper events only");
                println!("  pictures leaving the box: none can (redaction needs object detection)");
            }
            if cfg.mqtt.embedded_broker.is_some() {
                println!("  warning: embedded development broker enabled (loopback only); not for a deployed box");
            }
            println!("  digest {}", cfg.digest);
            Ok(())
        }
        Command::Doctor { camera_timeout, broker_timeout, fault_clock_unsynced } => {
            let cfg = load_config(&cli.config)?;
            println!("vakt doctor {} — config {}", env!("CARGO_PKG_VERSION"), cli.config.display());
            let opts = doctor::DoctorOptions {
                camera_timeout: std::time::Duration::from_secs(camera_timeout.max(1)),
                broker_timeout: std::time::Duration::from_secs(broker_timeout.max(1)),
                fault_clock_unsynced,
            };
            let checks = doctor::run(&cfg, &opts);
            if doctor::print(&checks) { Ok(()) } else { Err(DoctorFailed.into()) }
        }
        Command::Provision { force } => {
            let cfg = load_config(&cli.config)?;
            let dir = cfg.box_.state_dir.join("identity");
            let report = vakt_identity::Identity::provision(&dir, &cfg.box_.id, force)
                .with_context(|| format!("cannot provision box {}", cfg.box_.id))?;
            let mut log = open_audit(&cfg)?;
            log.append(
                "cli",
                "box.provisioned",
                json!({"box": cfg.box_.id, "signing_key": report.signing_key_fingerprint, "tls_key": report.tls_key_fingerprint, "force": force}),
            )?;
            println!("provisioned box {} in {}", cfg.box_.id, dir.display());
            println!("  signing key  {}  ({})", report.signing_key_fingerprint, report.signing_pub.display());
            println!("  TLS key      {}  ({})", report.tls_key_fingerprint, report.tls_key.display());
            println!("  certificate request: {}  (have it signed by the municipality's CA)", report.tls_csr.display());
            Ok(())
        }
        Command::Export { from, to, output, requester, keep_track, unmasked, reason, list_tracks } => {
            let cfg = load_config(&cli.config)?;
            if list_tracks {
                let v = export::list_tracks(&cfg, &from, &to, &requester)?;
                let tracks = v["tracks"].as_array().cloned().unwrap_or_default();
                println!("{} tracks from {from} to {to} (audit entry {})", tracks.len(), v["audit_seq"]);
                for t in tracks {
                    println!(
                        "  track {:>5}  {:<10} {} .. {}  zones: {}",
                        t["track"],
                        t["class"].as_str().unwrap_or("?"),
                        export::ms_to_rfc3339(t["first_ms"].as_i64().unwrap_or(0)),
                        export::ms_to_rfc3339(t["last_ms"].as_i64().unwrap_or(0)),
                        t["zones"]
                            .as_array()
                            .map(|z| z.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", "))
                            .unwrap_or_default()
                    );
                }
                return Ok(());
            }
            let output = output.expect("clap requires --output without --list-tracks");
            let s = export::export(
                &cfg,
                &export::ExportArgs { from, to, output, requester, keep_track, unmasked, reason },
            )?;
            println!(
                "exported {} frames from {} segments ({}) to {}; {} frames masked whole",
                s.frames,
                s.segments,
                s.mode,
                s.dir.display(),
                s.fully_masked
            );
            println!(
                "  check it with: vakt verify-export {} --trust {}",
                s.dir.display(),
                s.dir.join(export::PUBLIC_KEY).display()
            );
            Ok(())
        }
        Command::VerifyExport { dir, trust } => {
            let cfg = if trust.is_none() { Some(load_config(&cli.config)?) } else { None };
            let m = export::verify(&dir, trust.as_deref(), cfg.as_ref())?;
            println!(
                "{}: ok, signed by box {} (key {}), {} .. {}, {}, requester {}",
                dir.display(),
                m["box"].as_str().unwrap_or("?"),
                m["signing_key"].as_str().unwrap_or("?"),
                m["from"].as_str().unwrap_or("?"),
                m["to"].as_str().unwrap_or("?"),
                m["masking"].as_str().unwrap_or("?"),
                m["requester"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        Command::Hold { from, to, until, requester, reason, list, release } => {
            let cfg = load_config(&cli.config)?;
            if list {
                let v = export::status(&cfg)?;
                println!("{}", serde_json::to_string_pretty(&v["holds"])?);
                return Ok(());
            }
            let requester = requester.expect("clap requires --requester");
            if let Some(id) = release {
                let v = export::release(&cfg, id, &requester)?;
                if v["released"].is_null() {
                    return Err(UsageError(format!("--release {id}: no such hold")).into());
                }
                println!("hold {id} released");
                return Ok(());
            }
            let (from, to, until, reason) = (from.unwrap(), to.unwrap(), until.unwrap(), reason.unwrap());
            let v = export::hold(&cfg, &from, &to, &until, &requester, &reason)?;
            println!("hold {} on {from} .. {to} until {until}: {} segments held", v["hold"]["id"], v["segments"]);
            if v["key_protection"] == "ram" {
                println!(
                    "  note: this box keeps footage keys in RAM only; a power cut or restart loses the held footage"
                );
            }
            Ok(())
        }
        Command::Storage => {
            let cfg = load_config(&cli.config)?;
            let v = export::status(&cfg)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Command::BenchOutbox { dir, count, batch } => {
            let r = outbox::bench(&dir, count, batch.max(1))?;
            println!("{r}");
            Ok(())
        }
        Command::Decommission { output, requester, models_dir } => {
            let mut cfg = load_config(&cli.config)?;
            if let Some(dir) = models_dir {
                cfg.models.dir = dir;
            }
            let r = decommission::decommission(&cfg, &output, &requester)?;
            let d = &r["destroyed"];
            println!("box {} decommissioned; report: {}", cfg.box_.id, output.join(decommission::REPORT).display());
            println!(
                "  destroyed: {} segments ({} bytes), {} epoch keys, {} holds",
                d["segments"], d["bytes"], d["epoch_keys"], d["holds"]
            );
            for p in d["provider"].as_array().into_iter().flatten() {
                println!("  {}", p.as_str().unwrap_or(""));
            }
            println!(
                "  exported: {} holds, {} unsent events, the audit log",
                r["holds_exported"].as_array().map(Vec::len).unwrap_or(0),
                r["unsent_events"]["count"]
            );
            Ok(())
        }
        Command::Keys { command } => {
            let cfg = load_config(&cli.config)?;
            match command {
                KeysCommand::Add { name, role, key, by } => {
                    let pem = std::fs::read_to_string(&key)
                        .map_err(|e| UsageError(format!("--key {}: cannot read ({e})", key.display())))?;
                    let k =
                        commands::add_key(&cfg, &name, &role, &pem, &by).map_err(|e| UsageError(format!("{e:#}")))?;
                    open_audit(&cfg)?.append("cli", "keys.added", json!({"name": k.name, "role": k.role, "by": by}))?;
                    println!("authorised {} as {}", k.name, k.role.as_str());
                }
                KeysCommand::List => {
                    let list = commands::load_keys(&commands::keys_path(&cfg))?;
                    for k in list.keys {
                        println!("{}\t{}\tadded {} by {}", k.name, k.role.as_str(), k.added_at, k.added_by);
                    }
                }
                KeysCommand::Revoke { name, by } => {
                    if !commands::revoke_key(&cfg, &name)? {
                        return Err(UsageError(format!("--name {name:?}: no such key")).into());
                    }
                    open_audit(&cfg)?.append("cli", "keys.revoked", json!({"name": name, "by": by}))?;
                    println!("revoked {name}");
                    let left = commands::load_keys(&commands::keys_path(&cfg))?;
                    if !left.keys.iter().any(|k| k.role == commands::Role::Administrator) {
                        eprintln!(
                            "vakt: warning: no administrator key is left: signed commands can no longer add or \
                             revoke keys; authorise one here with `vakt keys add --role administrator`"
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Events { command: EventsCommand::Tail { url, topic, trust, ca, cert, key, duration, client_id } } => {
            let duration = match duration {
                None => None,
                Some(d) => Some(
                    humantime::parse_duration(&d)
                        .map_err(|e| UsageError(format!("--for {d:?}: a duration such as \"30s\" ({e})")))?,
                ),
            };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let summary = rt.block_on(tail::tail(tail::TailArgs {
                url,
                topic,
                trust,
                ca,
                cert: cert.zip(key),
                duration,
                client_id,
            }))?;
            eprintln!("{summary}");
            Ok(())
        }
        Command::Audit { command: AuditCommand::Verify } => {
            let cfg = load_config(&cli.config)?;
            let path = audit_path(&cfg);
            let r =
                vakt_audit::verify(&path).with_context(|| format!("audit log {} does not verify", path.display()))?;
            println!("{}: ok, {} entries, chain intact", path.display(), r.entries);
            {
                let h = &r.last_hash;
                println!("  last hash {h}");
            }
            Ok(())
        }
    }
}

pub(crate) fn audit_path(cfg: &Config) -> PathBuf {
    cfg.box_.state_dir.join("audit.log")
}

pub(crate) fn open_audit(cfg: &Config) -> anyhow::Result<vakt_audit::AuditLog> {
    let path = audit_path(cfg);
    let log =
        vakt_audit::AuditLog::open(&path).with_context(|| format!("cannot open the audit log {}", path.display()))?;
    if log.recovered_torn_tail() {
        tracing::warn!(path = %path.display(), "the audit log ended in a half-written entry (power cut while writing); it was cut back to the last complete entry");
    }
    Ok(log)
}

/// Audits a configuration change before the box acts on it: the digest of the config last run
/// is kept in `state_dir/config.digest`.
pub(crate) fn audit_config_change(cfg: &Config, actor: &str) -> anyhow::Result<()> {
    let digest_path = cfg.box_.state_dir.join("config.digest");
    let previous = std::fs::read_to_string(&digest_path).ok().map(|s| s.trim().to_string());
    if previous.as_deref() == Some(cfg.digest.as_str()) {
        return Ok(());
    }
    let mut log = open_audit(cfg)?;
    log.append(
        actor,
        "config.changed",
        json!({
            "from": previous,
            "to": cfg.digest,
            "recording": cfg.storage.record,
            "retention_s": cfg.storage.max_age.as_secs(),
            "privacy_masks": cfg.privacy.masks.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
            "zones": cfg.zones.iter().map(|z| z.name.clone()).collect::<Vec<_>>(),
            "lines": cfg.lines.iter().map(|l| l.name.clone()).collect::<Vec<_>>(),
            "detection": cfg.detect.enabled,
        }),
    )?;
    vakt_core::counters::write_durable(&digest_path, format!("{}\n", cfg.digest).as_bytes())
        .with_context(|| format!("cannot write {}", digest_path.display()))?;
    Ok(())
}
