//! Configuration: TOML parsed into raw structs (unknown keys refused), then validated into typed
//! values. Every error names the key, the value and what would be accepted. `vakt check-config`
//! runs exactly this code. Reference: `edge/docs/ref/config.md`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::detect::ObjectClass;
use crate::geometry::{Point, Polygon, Raster};
use crate::source::SourceSpec;

/// Models `[detect] model` accepts: those with a detector implementation (edge/vision).
pub const DETECTOR_MODELS: &[&str] = &["yolox_nano"];

/// The longest retention the box accepts, whatever the config says (IMY: "a few days at most").
pub const MAX_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A configuration error: which key, which value, and what would have been accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The file the error is in, when known.
    pub file: Option<PathBuf>,
    /// Dotted key path, e.g. `mqtt.url` or `privacy.masks[1].points`.
    pub key: String,
    /// The offending value as written (or a short description).
    pub value: String,
    /// What is accepted instead.
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        if self.key.is_empty() {
            write!(f, "{}", self.expected)
        } else if self.value.is_empty() {
            write!(f, "`{}`: {}", self.key, self.expected)
        } else {
            write!(f, "`{}` = {}: {}", self.key, self.value, self.expected)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(key: impl Into<String>, value: impl fmt::Display, expected: impl Into<String>) -> ConfigError {
    ConfigError { file: None, key: key.into(), value: value.to_string(), expected: expected.into() }
}

// ---------------------------------------------------------------------------------------------
// Raw, as written in the file.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(rename = "box")]
    box_: Option<RawBox>,
    source: Option<RawSource>,
    mqtt: Option<RawMqtt>,
    storage: Option<RawStorage>,
    motion: Option<RawMotion>,
    events: Option<RawEvents>,
    privacy: Option<RawPrivacy>,
    tamper: Option<RawTamper>,
    hardware: Option<RawHardware>,
    models: Option<RawModels>,
    detect: Option<RawDetect>,
    rules: Option<RawRules>,
    redact: Option<RawRedact>,
    #[serde(default)]
    zones: Vec<RawZone>,
    #[serde(default)]
    lines: Vec<RawLine>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDetect {
    enabled: Option<bool>,
    model: Option<String>,
    width: Option<u32>,
    interval: Option<String>,
    idle_interval: Option<String>,
    high_score: Option<f64>,
    low_score: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRedact {
    mode: Option<String>,
    hold: Option<String>,
    margin: Option<f64>,
    spread: Option<f64>,
    max_staleness: Option<String>,
    motion: Option<bool>,
    faces: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRules {
    presence_classes: Option<Vec<String>>,
    loiter_time: Option<String>,
    crowd_size: Option<u32>,
    crowd_time: Option<String>,
    running_speed: Option<f64>,
    running_people: Option<u32>,
    running_time: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZone {
    name: Option<String>,
    points: Option<Vec<Point>>,
    loiter_time: Option<String>,
    crowd_size: Option<u32>,
    crowd_time: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    name: Option<String>,
    points: Option<Vec<Point>>,
    classes: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHardware {
    profile: Option<String>,
    profile_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModels {
    dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTamper {
    enabled: Option<bool>,
    dark_fraction: Option<f64>,
    bright_fraction: Option<f64>,
    blur_ratio: Option<f64>,
    scene_similarity: Option<f64>,
    start_after: Option<String>,
    end_after: Option<String>,
    check_interval: Option<String>,
    reference_time: Option<String>,
    housing: Option<RawHousing>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHousing {
    chip: Option<PathBuf>,
    line: Option<u32>,
    open_when: Option<String>,
    debounce: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBox {
    id: Option<String>,
    site: Option<String>,
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    uri: Option<String>,
    camera: Option<String>,
    #[serde(rename = "loop")]
    loop_: Option<bool>,
    reconnect_max: Option<String>,
    stall_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    url: Option<String>,
    prefix: Option<String>,
    health_interval: Option<String>,
    keep_alive: Option<String>,
    embedded_broker: Option<String>,
    ca_file: Option<PathBuf>,
    outbox_max_bytes: Option<u64>,
    outbox_max_age: Option<String>,
    unreachable_alarm: Option<String>,
    onvif: Option<bool>,
    insecure_plaintext: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    dir: Option<PathBuf>,
    record: Option<bool>,
    max_age: Option<String>,
    max_bytes: Option<u64>,
    segment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMotion {
    width: Option<u32>,
    threshold: Option<f64>,
    sigma_k: Option<f64>,
    learn_time: Option<String>,
    min_area: Option<f64>,
    global_change: Option<f64>,
    #[serde(default)]
    masks: Vec<RawNamedPolygon>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvents {
    start_after: Option<String>,
    update_interval: Option<String>,
    end_after: Option<String>,
    min_zone_area: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrivacy {
    #[serde(default)]
    masks: Vec<RawNamedPolygon>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamedPolygon {
    name: Option<String>,
    points: Option<Vec<Point>>,
}

// ---------------------------------------------------------------------------------------------
// Typed, validated.

#[derive(Debug, Clone)]
pub struct Config {
    pub box_: BoxConfig,
    pub source: SourceConfig,
    pub mqtt: MqttConfig,
    pub storage: StorageConfig,
    pub motion: MotionConfig,
    pub events: EventsConfig,
    pub privacy: PrivacyConfig,
    pub tamper: TamperConfig,
    pub hardware: HardwareConfig,
    pub models: ModelsConfig,
    pub detect: DetectConfig,
    pub rules: RulesConfig,
    pub redact: RedactConfig,
    pub zones: Vec<Zone>,
    pub lines: Vec<Line>,
    /// sha256 of the file's bytes, hex: shown in the status message and the audit log.
    pub digest: String,
    /// The file it was loaded from (None: parsed from text).
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct BoxConfig {
    pub id: String,
    pub site: String,
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub uri: String,
    pub spec: SourceSpec,
    pub camera: String,
    pub loop_files: bool,
    pub reconnect_max: Duration,
    pub stall_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MqttScheme {
    Plain,
    Tls,
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub url: String,
    pub scheme: MqttScheme,
    pub host: String,
    pub port: u16,
    pub prefix: String,
    pub health_interval: Duration,
    pub keep_alive: Duration,
    /// Loopback address of the embedded development broker, when enabled.
    pub embedded_broker: Option<SocketAddr>,
    /// PEM file with the CA(s) that sign the broker's certificate; the system's CAs when unset.
    pub ca_file: Option<PathBuf>,
    /// The durable outbox's bound in bytes of payload (edge/docs/design/delivery.md).
    pub outbox_max_bytes: u64,
    /// Messages older than this are dropped from the outbox (and reported in `events_dropped`).
    pub outbox_max_age: Duration,
    /// The link down this long raises `broker_unreachable`.
    pub unreachable_alarm: Duration,
    /// Also publish every event in the ONVIF dialect (`<prefix>/onvif-ej/...`).
    pub onvif: bool,
    /// `mqtt://` was chosen knowingly: every status message carries a warning.
    pub insecure_plaintext: bool,
}

/// The board this box runs on (`[hardware]`, `hardware/README.md`).
#[derive(Debug, Clone)]
pub struct HardwareConfig {
    pub profile: crate::hardware::Profile,
    /// Where the profile came from: a built-in name, or the custom file.
    pub origin: String,
}

/// Where the detection models are installed (`[models]`).
#[derive(Debug, Clone)]
pub struct ModelsConfig {
    pub dir: PathBuf,
}

/// `[detect]`: object detection and tracking (edge/docs/design/analytics.md).
#[derive(Debug, Clone)]
pub struct DetectConfig {
    pub enabled: bool,
    /// A model manifest name (`models/<name>.toml`).
    pub model: String,
    /// Width of the colour frames the detector gets; the height keeps the aspect ratio.
    pub width: u32,
    /// Media time between detector runs while there is motion or a track.
    pub interval: Duration,
    /// Media time between detector runs over a still, empty scene.
    pub idle_interval: Duration,
    /// Detections at or above this start tracks.
    pub high_score: f64,
    /// The detector's floor: weaker detections are dropped, those between `low_score` and
    /// `high_score` only extend tracks.
    pub low_score: f64,
}

/// `[redact]`: dynamic masking of people on every picture that leaves the box
/// (edge/docs/design/privacy.md).
#[derive(Debug, Clone, PartialEq)]
pub struct RedactConfig {
    pub mode: crate::redaction::MaskMode,
    /// A person's mask is kept this long after the detector last saw them.
    pub hold: Duration,
    /// Added on every side of a person box, as a share of its width and height.
    pub margin: f64,
    /// Extra margin per second since a box was seen, as a share of its size.
    pub spread: f64,
    /// Detector results older than this mask the whole frame.
    pub max_staleness: Duration,
    /// Mask moving regions no detection explains.
    pub motion: bool,
    /// Also mask the faces a face detector (UltraFace) finds, for cameras close enough to show
    /// faces the person detector may miss (D9).
    pub faces: bool,
}

impl RedactConfig {
    /// The masker's parameters, with the track subject access keeps visible.
    pub fn params(&self, keep_track: Option<u64>) -> crate::redaction::MaskParams {
        crate::redaction::MaskParams {
            hold: self.hold.as_secs_f64(),
            margin: self.margin as f32,
            spread: self.spread as f32,
            max_staleness: self.max_staleness.as_secs_f64(),
            motion: self.motion,
            keep_track,
        }
    }
}

/// `[rules]`: the defaults of the analytic rules (edge/docs/design/rules.md); zones may override
/// the loitering and crowding ones.
#[derive(Debug, Clone)]
pub struct RulesConfig {
    pub presence_classes: Vec<ObjectClass>,
    pub loiter_time: Duration,
    pub crowd_size: u32,
    pub crowd_time: Duration,
    /// Box heights per second.
    pub running_speed: f64,
    pub running_people: u32,
    pub running_time: Duration,
}

/// A named zone: motion, presence, loitering, crowding and running are judged per zone.
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: String,
    pub polygon: Polygon,
    pub loiter_time: Duration,
    pub crowd_size: u32,
    pub crowd_time: Duration,
}

/// A counting line (`[[lines]]`): crossings of its segment from A to B, with direction.
#[derive(Debug, Clone)]
pub struct Line {
    pub name: String,
    pub a: Point,
    pub b: Point,
    pub classes: Vec<ObjectClass>,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub dir: PathBuf,
    pub record: bool,
    pub max_age: Duration,
    /// Byte quota for recorded segments; `None`: 80 % of what the file system can hold for them
    /// (free space plus the store's own use) when the box starts.
    pub max_bytes: Option<u64>,
    /// Length of one recorded segment (a new one starts at the first key frame after it).
    pub segment: Duration,
}

#[derive(Debug, Clone)]
pub struct MotionConfig {
    /// Working width in pixels of the grey analysis frame (height keeps the aspect ratio).
    pub width: u32,
    /// Smallest grey-level difference that can count as motion (0..255).
    pub threshold: f64,
    /// Difference, in background standard deviations, above which a pixel is foreground.
    pub sigma_k: f64,
    /// Time constant of the background model.
    pub learn_time: Duration,
    /// Smallest blob kept, as a share of the frame.
    pub min_area: f64,
    /// Share of the frame changing at once that is taken as a global illumination change.
    pub global_change: f64,
    /// Areas where motion is ignored.
    pub masks: Vec<NamedPolygon>,
}

#[derive(Debug, Clone)]
pub struct EventsConfig {
    pub start_after: Duration,
    pub update_interval: Duration,
    pub end_after: Duration,
    /// Share of the frame that must be moving inside a zone for the zone to be active.
    pub min_zone_area: f64,
}

/// Tamper and sabotage detection (`edge/docs/design/tamper.md`).
#[derive(Debug, Clone)]
pub struct TamperConfig {
    pub enabled: bool,
    pub thresholds: crate::tamper::TamperThresholds,
    /// How often the scene is measured, in media time.
    pub check_interval: Duration,
    /// How long `vakt commission` (and offline replay without a reference) learns the scene.
    pub reference_time: Duration,
    /// The enclosure's tamper switch, when the board has one.
    pub housing: Option<HousingConfig>,
}

/// A GPIO line that reports the housing open (`[tamper.housing]`).
#[derive(Debug, Clone, PartialEq)]
pub struct HousingConfig {
    /// GPIO character device, e.g. `/dev/gpiochip0`.
    pub chip: PathBuf,
    /// Line offset on that chip.
    pub line: u32,
    /// The level that means "open": true for high.
    pub open_when_high: bool,
    /// The level must hold this long before it counts.
    pub debounce: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct PrivacyConfig {
    pub masks: Vec<NamedPolygon>,
}

impl PrivacyConfig {
    pub fn polygons(&self) -> Vec<Polygon> {
        self.masks.iter().map(|m| m.polygon.clone()).collect()
    }
}

#[derive(Debug, Clone)]
pub struct NamedPolygon {
    pub name: String,
    pub polygon: Polygon,
}

/// The default time constants, in one place so docs and code agree.
pub mod defaults {
    pub const STATE_DIR: &str = "/var/lib/vakt";
    pub const MODELS_DIR: &str = "/usr/share/vakt/models";
    /// 64 MiB: about 100 000 events of 600 bytes.
    pub const OUTBOX_MAX_BYTES: u64 = 64 * 1024 * 1024;
    /// A week of broker outage.
    pub const OUTBOX_MAX_AGE: &str = "7d";
    /// The broker out of reach this long is an alarm.
    pub const UNREACHABLE_ALARM: &str = "2m";
    pub const CAMERA: &str = "cam0";
    pub const RECONNECT_MAX: &str = "30s";
    pub const STALL_TIMEOUT: &str = "5s";
    pub const HEALTH_INTERVAL: &str = "30s";
    pub const KEEP_ALIVE: &str = "15s";
    pub const MAX_AGE: &str = "24h";
    pub const SEGMENT: &str = "10s";
    pub const MOTION_WIDTH: u32 = 320;
    pub const MOTION_THRESHOLD: f64 = 12.0;
    pub const MOTION_SIGMA_K: f64 = 3.0;
    pub const MOTION_LEARN_TIME: &str = "8s";
    pub const MOTION_MIN_AREA: f64 = 0.0005;
    pub const MOTION_GLOBAL_CHANGE: f64 = 0.6;
    pub const START_AFTER: &str = "400ms";
    pub const UPDATE_INTERVAL: &str = "10s";
    pub const END_AFTER: &str = "5s";
    pub const MIN_ZONE_AREA: f64 = 0.0005;
    pub const TAMPER_DARK_FRACTION: f64 = 0.85;
    pub const TAMPER_BRIGHT_FRACTION: f64 = 0.6;
    pub const TAMPER_BLUR_RATIO: f64 = 0.35;
    pub const TAMPER_SCENE_SIMILARITY: f64 = 0.7;
    pub const TAMPER_START_AFTER: &str = "3s";
    pub const TAMPER_END_AFTER: &str = "2s";
    pub const TAMPER_CHECK_INTERVAL: &str = "200ms";
    pub const TAMPER_REFERENCE_TIME: &str = "10s";
    pub const DETECT_MODEL: &str = "yolox_nano";
    pub const DETECT_WIDTH: u32 = 416;
    pub const DETECT_INTERVAL: &str = "200ms";
    pub const DETECT_IDLE_INTERVAL: &str = "2s";
    pub const DETECT_HIGH_SCORE: f64 = 0.5;
    pub const DETECT_LOW_SCORE: f64 = 0.2;
    pub const LOITER_TIME: &str = "60s";
    pub const CROWD_SIZE: u32 = 10;
    pub const CROWD_TIME: &str = "10s";
    pub const RUNNING_SPEED: f64 = 1.6;
    pub const RUNNING_PEOPLE: u32 = 3;
    pub const RUNNING_TIME: &str = "1s";
    pub const REDACT_MODE: &str = "solid";
    pub const REDACT_HOLD: &str = "1s";
    pub const REDACT_MARGIN: f64 = 0.2;
    pub const REDACT_SPREAD: f64 = 0.25;
    pub const REDACT_MAX_STALENESS: &str = "500ms";
    pub const REDACT_FACES: bool = true;
}

/// Loads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: Some(path.to_path_buf()),
        key: String::new(),
        value: String::new(),
        expected: format!("cannot read the config file: {e}"),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let text = with_overlay(&text, base)?;
    let mut cfg = parse(&text, base).map_err(|mut e| {
        e.file = Some(path.to_path_buf());
        e
    })?;
    cfg.path = Some(path.to_path_buf());
    Ok(cfg)
}

/// The file signed commands write (`state_dir/overlay.toml`): settings that replace the config
/// file's (edge/docs/design/commands.md, "Changing the configuration").
pub const OVERLAY_FILE: &str = "overlay.toml";

/// Where the overlay of the config `text` (in `base`) lives.
pub fn overlay_path(text: &str, base: &Path) -> Option<PathBuf> {
    let v: toml::Table = toml::from_str(text).ok()?;
    let dir = v
        .get("box")
        .and_then(|b| b.get("state_dir"))
        .and_then(|d| d.as_str())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(defaults::STATE_DIR));
    Some(resolve(base, dir).join(OVERLAY_FILE))
}

/// `text` with the overlay's tables merged in: a key in the overlay replaces the file's, arrays
/// (masks, zones, lines) whole. Without an overlay, `text` unchanged.
pub fn with_overlay(text: &str, base: &Path) -> Result<String, ConfigError> {
    let Some(path) = overlay_path(text, base) else { return Ok(text.to_string()) };
    let overlay = match std::fs::read_to_string(&path) {
        Ok(o) => o,
        // no state directory yet, or a path that is not one (vakt doctor reports that): no overlay
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Ok(text.to_string());
        }
        Err(e) => {
            return Err(ConfigError {
                file: Some(path),
                key: String::new(),
                value: String::new(),
                expected: format!(
                    "cannot read the overlay that signed commands wrote: {e} (run as root or as the box's user, which can read the state directory)"
                ),
            });
        }
    };
    let bad =
        |e: String| ConfigError { file: Some(path.clone()), key: String::new(), value: String::new(), expected: e };
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| bad(format!("the config is not TOML: {e}")))?;
    let over: toml::Table = toml::from_str(&overlay).map_err(|e| bad(format!("the overlay is not TOML: {e}")))?;
    merge(&mut doc, over);
    toml::to_string(&doc).map_err(|e| bad(format!("cannot merge the overlay: {e}")))
}

/// Merges `over` into `doc`: tables key by key, anything else (arrays included) replaced.
pub fn merge(doc: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (doc.get_mut(&k), v) {
            (Some(toml::Value::Table(d)), toml::Value::Table(o)) => merge(d, o),
            (_, v) => {
                doc.insert(k, v);
            }
        }
    }
}

/// Parses and validates config text. Relative paths resolve against `base`.
pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
    let syntax = |e: toml::de::Error| ConfigError {
        file: None,
        key: String::new(),
        value: String::new(),
        expected: format!("invalid TOML: {}", e.to_string().trim_end()),
    };
    let de = toml::Deserializer::parse(text).map_err(syntax)?;
    // serde_path_to_error names the key of a wrongly typed value (e.g. `storage.record`).
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().to_string();
        let at = inner.span().map(|s| line_col(text, s.start)).unwrap_or_default();
        if key.is_empty() || key == "." {
            ConfigError { file: None, key: String::new(), value: String::new(), expected: format!("{message}{at}") }
        } else {
            ConfigError { file: None, key, value: String::new(), expected: format!("{message}{at}") }
        }
    })?;
    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    validate(raw, base, digest)
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    format!(" (line {line}, column {col})")
}

fn required<T>(v: Option<T>, key: &str, what: &str) -> Result<T, ConfigError> {
    v.ok_or_else(|| err(key, "", format!("missing; {what}")))
}

fn duration(
    v: Option<String>,
    key: &str,
    default: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let s = v.unwrap_or_else(|| default.to_string());
    let d = humantime::parse_duration(&s)
        .map_err(|e| err(key, format!("{s:?}"), format!("a duration such as \"90s\", \"5m\" or \"2h\" ({e})")))?;
    if d < min || d > max {
        return Err(err(
            key,
            format!("{s:?}"),
            format!("must lie between {} and {}", humantime::format_duration(min), humantime::format_duration(max)),
        ));
    }
    Ok(d)
}

fn number(v: Option<f64>, key: &str, default: f64, min: f64, max: f64) -> Result<f64, ConfigError> {
    let x = v.unwrap_or(default);
    if !x.is_finite() || x < min || x > max {
        return Err(err(key, x, format!("a number from {min} to {max}")));
    }
    Ok(x)
}

/// Names of boxes, sites, cameras and zones: they appear in MQTT topics.
fn name(v: String, key: &str) -> Result<String, ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !v.starts_with('-');
    if !ok {
        return Err(err(
            key,
            format!("{v:?}"),
            "1 to 64 characters of a-z, 0-9, '-' and '_', not starting with '-' (it becomes part of MQTT topics)",
        ));
    }
    Ok(v)
}

/// The box id becomes the CN and DNS name of its TLS certificate: a DNS label.
fn dns_label(v: String, key: &str) -> Result<String, ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if !ok {
        return Err(err(
            key,
            format!("{v:?}"),
            "1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-' (it is the box's DNS name in its TLS certificate)",
        ));
    }
    Ok(v)
}

fn polygons(raw: Vec<RawNamedPolygon>, key: &str) -> Result<Vec<NamedPolygon>, ConfigError> {
    let mut out: Vec<NamedPolygon> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let k = format!("{key}[{i}]");
        let n = name(required(r.name, &format!("{k}.name"), "every polygon needs a name")?, &format!("{k}.name"))?;
        if out.iter().any(|o| o.name == n) {
            return Err(err(format!("{k}.name"), format!("{n:?}"), "names must be unique within the list"));
        }
        let pts = required(r.points, &format!("{k}.points"), "a list of [x, y] pairs, normalised to 0..1")?;
        let shown = format!("{pts:?}");
        let polygon = Polygon::new(pts).map_err(|e| err(format!("{k}.points"), shown, format!("the polygon {e}")))?;
        out.push(NamedPolygon { name: n, polygon });
    }
    Ok(out)
}

fn validate(raw: RawConfig, base: &Path, digest: String) -> Result<Config, ConfigError> {
    let rb = required(raw.box_, "box", "the [box] table with `id` and `site`")?;
    let id = dns_label(required(rb.id, "box.id", "the box's unique id, e.g. \"vakt-0042\"")?, "box.id")?;
    let site = name(required(rb.site, "box.site", "the site name, e.g. \"stora-torget\"")?, "box.site")?;
    let state_dir = resolve(base, rb.state_dir.unwrap_or_else(|| PathBuf::from(defaults::STATE_DIR)));
    let box_ = BoxConfig { id, site, state_dir };

    let rs = required(raw.source, "source", "the [source] table with `uri`")?;
    let uri = required(
        rs.uri,
        "source.uri",
        "rtsp://, file://, a path, dir/in%06d.jpg, v4l2:///dev/videoN, camera:// or test://",
    )?;
    let spec = SourceSpec::parse(&uri, base)
        .map_err(|e| err("source.uri", format!("{:?}", crate::source::without_credentials(&uri)), e))?;
    let source = SourceConfig {
        uri,
        spec,
        camera: name(rs.camera.unwrap_or_else(|| defaults::CAMERA.into()), "source.camera")?,
        loop_files: rs.loop_.unwrap_or(false),
        reconnect_max: duration(
            rs.reconnect_max,
            "source.reconnect_max",
            defaults::RECONNECT_MAX,
            Duration::from_secs(1),
            Duration::from_secs(600),
        )?,
        stall_timeout: duration(
            rs.stall_timeout,
            "source.stall_timeout",
            defaults::STALL_TIMEOUT,
            Duration::from_millis(500),
            Duration::from_secs(120),
        )?,
    };

    let rm = required(raw.mqtt, "mqtt", "the [mqtt] table with `url`")?;
    let url = required(rm.url, "mqtt.url", "the broker, mqtts://host:port (or mqtt://host:port on a trusted network)")?;
    let (scheme, host, port) = parse_mqtt_url(&url)
        .map_err(|e| err("mqtt.url", format!("{:?}", crate::source::without_credentials(&url)), e))?;
    let prefix = match rm.prefix {
        Some(p) => {
            let ok = !p.is_empty()
                && !p.starts_with('/')
                && !p.ends_with('/')
                && !p.contains(['+', '#', '\0'])
                && !p.starts_with('$');
            if !ok {
                return Err(err(
                    "mqtt.prefix",
                    format!("{p:?}"),
                    "a topic prefix without wildcards (+ #), leading '$' or '/', or trailing '/'",
                ));
            }
            p
        }
        None => format!("vakt/{}/{}", box_.site, box_.id),
    };
    let embedded_broker = match rm.embedded_broker {
        None => None,
        Some(a) => {
            let addr: SocketAddr = a.parse().map_err(|_| {
                err("mqtt.embedded_broker", format!("{a:?}"), "a loopback address and port, e.g. \"127.0.0.1:1883\"")
            })?;
            if !addr.ip().is_loopback() {
                return Err(err(
                    "mqtt.embedded_broker",
                    format!("{a:?}"),
                    "the embedded development broker binds to loopback only (127.0.0.1 or [::1])",
                ));
            }
            Some(addr)
        }
    };
    let mqtt = MqttConfig {
        url,
        scheme,
        host,
        port,
        prefix,
        health_interval: duration(
            rm.health_interval,
            "mqtt.health_interval",
            defaults::HEALTH_INTERVAL,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )?,
        keep_alive: duration(
            rm.keep_alive,
            "mqtt.keep_alive",
            defaults::KEEP_ALIVE,
            Duration::from_secs(5),
            Duration::from_secs(600),
        )?,
        embedded_broker,
        ca_file: rm.ca_file.map(|p| resolve(base, p)),
        outbox_max_bytes: match rm.outbox_max_bytes {
            None => defaults::OUTBOX_MAX_BYTES,
            Some(b) if (64 * 1024..=4 * 1024 * 1024 * 1024).contains(&b) => b,
            Some(b) => {
                return Err(err(
                    "mqtt.outbox_max_bytes",
                    b.to_string(),
                    "bytes of queued messages, from 65536 (64 KiB) to 4294967296 (4 GiB)",
                ));
            }
        },
        outbox_max_age: duration(
            rm.outbox_max_age,
            "mqtt.outbox_max_age",
            defaults::OUTBOX_MAX_AGE,
            Duration::from_secs(60),
            Duration::from_secs(30 * 24 * 3600),
        )?,
        unreachable_alarm: duration(
            rm.unreachable_alarm,
            "mqtt.unreachable_alarm",
            defaults::UNREACHABLE_ALARM,
            Duration::from_secs(5),
            Duration::from_secs(24 * 3600),
        )?,
        onvif: rm.onvif.unwrap_or(false),
        insecure_plaintext: rm.insecure_plaintext.unwrap_or(false),
    };
    match (&mqtt.scheme, mqtt.insecure_plaintext) {
        (MqttScheme::Plain, false) => {
            return Err(err(
                "mqtt.url",
                format!("{:?}", crate::source::without_credentials(&mqtt.url)),
                "plaintext MQTT: use mqtts://host:port, or on a trusted network set `insecure_plaintext = true` in [mqtt] (events then cross the network unencrypted and every status says so)",
            ));
        }
        (MqttScheme::Tls, true) => {
            return Err(err(
                "mqtt.insecure_plaintext",
                "true",
                "only for mqtt:// URLs; remove it (mqtt.url is mqtts://)",
            ));
        }
        _ => {}
    }
    if let Some(ca) = &mqtt.ca_file {
        let shown = format!("{:?}", ca.display().to_string());
        if mqtt.scheme == MqttScheme::Plain {
            return Err(err(
                "mqtt.ca_file",
                shown,
                "only used with mqtts://; remove it or change mqtt.url to mqtts://",
            ));
        }
        let pem = std::fs::read_to_string(ca)
            .map_err(|e| err("mqtt.ca_file", &shown, format!("cannot read the broker's CA file ({e})")))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(err("mqtt.ca_file", &shown, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
        }
    }

    let rst = required(raw.storage, "storage", "the [storage] table with `record = true` or `record = false`")?;
    let record = rst.record.ok_or_else(|| {
        err(
            "storage.record",
            "",
            "missing; write `record = true` or `record = false` explicitly (there is no default, so recording is never switched on by accident)",
        )
    })?;
    let storage = StorageConfig {
        dir: resolve(base, rst.dir.unwrap_or_else(|| box_.state_dir.join("ring"))),
        record,
        max_age: duration(rst.max_age, "storage.max_age", defaults::MAX_AGE, Duration::from_secs(60), MAX_RETENTION)?,
        max_bytes: match rst.max_bytes {
            Some(b) if b < 16 * 1024 * 1024 => {
                return Err(err(
                    "storage.max_bytes",
                    b.to_string(),
                    "at least 16777216 (16 MiB): room for a few segments",
                ));
            }
            b => b,
        },
        segment: duration(
            rst.segment,
            "storage.segment",
            defaults::SEGMENT,
            Duration::from_secs(2),
            Duration::from_secs(60),
        )?,
    };

    let rmo = raw.motion.unwrap_or(RawMotion {
        width: None,
        threshold: None,
        sigma_k: None,
        learn_time: None,
        min_area: None,
        global_change: None,
        masks: Vec::new(),
    });
    let width = rmo.width.unwrap_or(defaults::MOTION_WIDTH);
    if !(64..=1920).contains(&width) || !width.is_multiple_of(2) {
        return Err(err("motion.width", width, "an even number of pixels from 64 to 1920"));
    }
    let motion = MotionConfig {
        width,
        threshold: number(rmo.threshold, "motion.threshold", defaults::MOTION_THRESHOLD, 1.0, 128.0)?,
        sigma_k: number(rmo.sigma_k, "motion.sigma_k", defaults::MOTION_SIGMA_K, 0.5, 10.0)?,
        learn_time: duration(
            rmo.learn_time,
            "motion.learn_time",
            defaults::MOTION_LEARN_TIME,
            Duration::from_millis(500),
            Duration::from_secs(3600),
        )?,
        min_area: number(rmo.min_area, "motion.min_area", defaults::MOTION_MIN_AREA, 0.0, 0.5)?,
        global_change: number(rmo.global_change, "motion.global_change", defaults::MOTION_GLOBAL_CHANGE, 0.1, 1.0)?,
        masks: polygons(rmo.masks, "motion.masks")?,
    };

    let re = raw.events.unwrap_or(RawEvents {
        start_after: None,
        update_interval: None,
        end_after: None,
        min_zone_area: None,
    });
    let events = EventsConfig {
        start_after: duration(
            re.start_after,
            "events.start_after",
            defaults::START_AFTER,
            Duration::ZERO,
            Duration::from_secs(60),
        )?,
        update_interval: duration(
            re.update_interval,
            "events.update_interval",
            defaults::UPDATE_INTERVAL,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )?,
        end_after: duration(
            re.end_after,
            "events.end_after",
            defaults::END_AFTER,
            Duration::from_millis(100),
            Duration::from_secs(600),
        )?,
        min_zone_area: number(re.min_zone_area, "events.min_zone_area", defaults::MIN_ZONE_AREA, 0.0, 1.0)?,
    };

    let privacy = PrivacyConfig { masks: polygons(raw.privacy.map(|p| p.masks).unwrap_or_default(), "privacy.masks")? };
    // Together the privacy masks must leave something to see.
    let all = Raster::conservative(&privacy.polygons(), 160, 120);
    if !privacy.masks.is_empty() && all.count() == 160 * 120 {
        return Err(err(
            "privacy.masks",
            format!("{} masks", privacy.masks.len()),
            "together the masks cover the whole frame; leave part of the view unmasked",
        ));
    }
    let detect = detect(raw.detect.unwrap_or_default(), motion.width)?;
    let rules = rules(raw.rules.unwrap_or_default())?;
    let redact = redact(raw.redact.unwrap_or_default(), &detect)?;
    let zones = zones(raw.zones, &rules)?;
    let lines = lines(raw.lines)?;

    let hardware = hardware(raw.hardware, base)?;
    let models = ModelsConfig {
        dir: resolve(base, raw.models.and_then(|m| m.dir).unwrap_or_else(|| PathBuf::from(defaults::MODELS_DIR))),
    };

    let rt = raw.tamper.unwrap_or_default();
    let tamper = TamperConfig {
        enabled: rt.enabled.unwrap_or(true),
        thresholds: crate::tamper::TamperThresholds {
            dark_fraction: number(rt.dark_fraction, "tamper.dark_fraction", defaults::TAMPER_DARK_FRACTION, 0.3, 1.0)?,
            bright_fraction: number(
                rt.bright_fraction,
                "tamper.bright_fraction",
                defaults::TAMPER_BRIGHT_FRACTION,
                0.3,
                1.0,
            )?,
            blur_ratio: number(rt.blur_ratio, "tamper.blur_ratio", defaults::TAMPER_BLUR_RATIO, 0.05, 0.9)?,
            scene_similarity: number(
                rt.scene_similarity,
                "tamper.scene_similarity",
                defaults::TAMPER_SCENE_SIMILARITY,
                0.05,
                0.9,
            )?,
            start_after: duration(
                rt.start_after,
                "tamper.start_after",
                defaults::TAMPER_START_AFTER,
                Duration::ZERO,
                Duration::from_secs(600),
            )?,
            end_after: duration(
                rt.end_after,
                "tamper.end_after",
                defaults::TAMPER_END_AFTER,
                Duration::from_millis(100),
                Duration::from_secs(600),
            )?,
        },
        check_interval: duration(
            rt.check_interval,
            "tamper.check_interval",
            defaults::TAMPER_CHECK_INTERVAL,
            Duration::from_millis(40),
            Duration::from_secs(10),
        )?,
        reference_time: duration(
            rt.reference_time,
            "tamper.reference_time",
            defaults::TAMPER_REFERENCE_TIME,
            Duration::from_secs(1),
            Duration::from_secs(600),
        )?,
        housing: match rt.housing {
            None => None,
            Some(h) => Some(housing(h, hardware.profile.housing_switch.as_ref())?),
        },
    };

    let th = &tamper.thresholds;
    if tamper.check_interval > th.end_after || (!th.start_after.is_zero() && tamper.check_interval > th.start_after) {
        return Err(err(
            "tamper.check_interval",
            format!("{:?}", humantime::format_duration(tamper.check_interval).to_string()),
            "must not exceed tamper.start_after or tamper.end_after (conditions are judged on checks)",
        ));
    }

    Ok(Config {
        box_,
        source,
        mqtt,
        storage,
        motion,
        events,
        privacy,
        tamper,
        hardware,
        models,
        detect,
        rules,
        redact,
        zones,
        lines,
        digest,
        path: None,
    })
}

fn detect(r: RawDetect, motion_width: u32) -> Result<DetectConfig, ConfigError> {
    let model = r.model.unwrap_or_else(|| defaults::DETECT_MODEL.to_string());
    if !DETECTOR_MODELS.contains(&model.as_str()) {
        return Err(err(
            "detect.model",
            format!("{model:?}"),
            format!(
                "a detector model the box can run: {}",
                DETECTOR_MODELS.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let width = r.width.unwrap_or(defaults::DETECT_WIDTH);
    if !(160..=1920).contains(&width) || !width.is_multiple_of(2) {
        return Err(err("detect.width", width, "an even number of pixels from 160 to 1920"));
    }
    let enabled = r.enabled.unwrap_or(true);
    if enabled && width < motion_width {
        return Err(err(
            "detect.width",
            width,
            format!("at least motion.width ({motion_width}): motion is measured on the same frames, scaled down"),
        ));
    }
    let high_score = number(r.high_score, "detect.high_score", defaults::DETECT_HIGH_SCORE, 0.05, 0.99)?;
    let low_score = number(r.low_score, "detect.low_score", defaults::DETECT_LOW_SCORE, 0.01, 0.99)?;
    if low_score > high_score {
        return Err(err("detect.low_score", low_score, format!("at most detect.high_score ({high_score})")));
    }
    let interval =
        duration(r.interval, "detect.interval", defaults::DETECT_INTERVAL, Duration::ZERO, Duration::from_secs(10))?;
    let idle_interval = duration(
        r.idle_interval,
        "detect.idle_interval",
        defaults::DETECT_IDLE_INTERVAL,
        Duration::ZERO,
        Duration::from_secs(60),
    )?;
    if idle_interval < interval {
        return Err(err(
            "detect.interval",
            format!("{:?}", humantime::format_duration(interval).to_string()),
            format!(
                "at most detect.idle_interval ({}): the idle schedule is the slower one",
                humantime::format_duration(idle_interval)
            ),
        ));
    }
    Ok(DetectConfig { enabled, model, width, interval, idle_interval, high_score, low_score })
}

fn redact(r: RawRedact, detect: &DetectConfig) -> Result<RedactConfig, ConfigError> {
    use crate::redaction::MaskMode;
    let mode_s = r.mode.unwrap_or_else(|| defaults::REDACT_MODE.to_string());
    let mode = MaskMode::parse(&mode_s).ok_or_else(|| {
        err(
            "redact.mode",
            format!("{mode_s:?}"),
            format!(
                "one of {}",
                MaskMode::ALL.iter().map(|m| format!("\"{}\"", m.as_str())).collect::<Vec<_>>().join(", ")
            ),
        )
    })?;
    let hold = duration(r.hold, "redact.hold", defaults::REDACT_HOLD, Duration::ZERO, Duration::from_secs(30))?;
    let margin = number(r.margin, "redact.margin", defaults::REDACT_MARGIN, 0.0, 1.0)?;
    let spread = number(r.spread, "redact.spread", defaults::REDACT_SPREAD, 0.0, 5.0)?;
    let max_staleness = duration(
        r.max_staleness,
        "redact.max_staleness",
        defaults::REDACT_MAX_STALENESS,
        Duration::from_millis(1),
        Duration::from_secs(10),
    )?;
    if detect.enabled && max_staleness < detect.interval {
        return Err(err(
            "redact.max_staleness",
            format!("{:?}", humantime::format_duration(max_staleness).to_string()),
            format!(
                "at least detect.interval ({}): results between two runs would always be stale",
                humantime::format_duration(detect.interval)
            ),
        ));
    }
    Ok(RedactConfig {
        mode,
        hold,
        margin,
        spread,
        max_staleness,
        motion: r.motion.unwrap_or(true),
        faces: r.faces.unwrap_or(defaults::REDACT_FACES),
    })
}

fn classes(v: Vec<String>, key: &str) -> Result<Vec<ObjectClass>, ConfigError> {
    let mut out = Vec::new();
    for (i, c) in v.iter().enumerate() {
        let class = ObjectClass::parse(c).ok_or_else(|| {
            err(
                format!("{key}[{i}]"),
                format!("{c:?}"),
                format!(
                    "one of {}",
                    ObjectClass::ALL.iter().map(|c| format!("\"{}\"", c.as_str())).collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        if !out.contains(&class) {
            out.push(class);
        }
    }
    Ok(out)
}

fn rules(r: RawRules) -> Result<RulesConfig, ConfigError> {
    let presence_classes = match r.presence_classes {
        Some(v) => classes(v, "rules.presence_classes")?,
        None => ObjectClass::ALL.to_vec(),
    };
    Ok(RulesConfig {
        presence_classes,
        loiter_time: duration(
            r.loiter_time,
            "rules.loiter_time",
            defaults::LOITER_TIME,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )?,
        crowd_size: crowd_size(r.crowd_size, "rules.crowd_size", defaults::CROWD_SIZE)?,
        crowd_time: duration(
            r.crowd_time,
            "rules.crowd_time",
            defaults::CROWD_TIME,
            Duration::ZERO,
            Duration::from_secs(3600),
        )?,
        running_speed: number(r.running_speed, "rules.running_speed", defaults::RUNNING_SPEED, 0.2, 20.0)?,
        running_people: match r.running_people.unwrap_or(defaults::RUNNING_PEOPLE) {
            n @ 1..=100 => n,
            n => return Err(err("rules.running_people", n, "a number of people from 1 to 100")),
        },
        running_time: duration(
            r.running_time,
            "rules.running_time",
            defaults::RUNNING_TIME,
            Duration::ZERO,
            Duration::from_secs(600),
        )?,
    })
}

fn crowd_size(v: Option<u32>, key: &str, default: u32) -> Result<u32, ConfigError> {
    match v.unwrap_or(default) {
        n @ 1..=1000 => Ok(n),
        n => Err(err(key, n, "a number of people from 1 to 1000 (crowding is more than this many)")),
    }
}

fn zones(raw: Vec<RawZone>, rules: &RulesConfig) -> Result<Vec<Zone>, ConfigError> {
    let mut out: Vec<Zone> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let k = format!("zones[{i}]");
        let named = polygons(vec![RawNamedPolygon { name: r.name, points: r.points }], "zones")
            .map_err(|mut e| {
                e.key = e.key.replacen("zones[0]", &k, 1);
                e
            })?
            .remove(0);
        if out.iter().any(|o| o.name == named.name) {
            return Err(err(format!("{k}.name"), format!("{:?}", named.name), "names must be unique within the list"));
        }
        let loiter_time = match r.loiter_time {
            Some(v) => {
                duration(Some(v), &format!("{k}.loiter_time"), "", Duration::from_secs(1), Duration::from_secs(3600))?
            }
            None => rules.loiter_time,
        };
        let crowd_time = match r.crowd_time {
            Some(v) => duration(Some(v), &format!("{k}.crowd_time"), "", Duration::ZERO, Duration::from_secs(3600))?,
            None => rules.crowd_time,
        };
        let crowd_size = crowd_size(r.crowd_size, &format!("{k}.crowd_size"), rules.crowd_size)?;
        out.push(Zone { name: named.name, polygon: named.polygon, loiter_time, crowd_size, crowd_time });
    }
    Ok(out)
}

fn lines(raw: Vec<RawLine>) -> Result<Vec<Line>, ConfigError> {
    let mut out: Vec<Line> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let k = format!("lines[{i}]");
        let n = name(required(r.name, &format!("{k}.name"), "every line needs a name")?, &format!("{k}.name"))?;
        if out.iter().any(|o| o.name == n) {
            return Err(err(format!("{k}.name"), format!("{n:?}"), "names must be unique within the list"));
        }
        let pts =
            required(r.points, &format!("{k}.points"), "two [x, y] points, normalised to 0..1: [[x1, y1], [x2, y2]]")?;
        let ok = pts.len() == 2
            && pts.iter().all(|p| p.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)))
            && ((pts[1][0] - pts[0][0]).powi(2) + (pts[1][1] - pts[0][1]).powi(2)).sqrt() >= 0.01;
        if !ok {
            return Err(err(
                format!("{k}.points"),
                format!("{pts:?}"),
                "two distinct [x, y] points inside 0..1, at least 0.01 apart",
            ));
        }
        let classes = match r.classes {
            Some(v) => classes(v, &format!("{k}.classes"))?,
            None => ObjectClass::ALL.to_vec(),
        };
        if classes.is_empty() {
            return Err(err(format!("{k}.classes"), "[]", "at least one class, or leave it out for every class"));
        }
        out.push(Line { name: n, a: pts[0], b: pts[1], classes });
    }
    Ok(out)
}

fn hardware(raw: Option<RawHardware>, base: &Path) -> Result<HardwareConfig, ConfigError> {
    let raw = raw.unwrap_or(RawHardware { profile: None, profile_file: None });
    match (raw.profile, raw.profile_file) {
        (Some(_), Some(f)) => Err(err(
            "hardware.profile_file",
            format!("{:?}", f.display().to_string()),
            "give either `profile` (a built-in board) or `profile_file` (a custom board), not both",
        )),
        (None, Some(f)) => {
            let path = resolve(base, f);
            let shown = format!("{:?}", path.display().to_string());
            let text = std::fs::read_to_string(&path)
                .map_err(|e| err("hardware.profile_file", &shown, format!("cannot read the board profile ({e})")))?;
            let profile = crate::hardware::parse(&text).map_err(|e| {
                err("hardware.profile_file", &shown, format!("not a valid board profile (hardware/README.md): {e}"))
            })?;
            Ok(HardwareConfig { profile, origin: path.display().to_string() })
        }
        (p, None) => {
            let name = p.unwrap_or_else(|| crate::hardware::DEFAULT.to_string());
            let profile = crate::hardware::builtin(&name).ok_or_else(|| {
                err(
                    "hardware.profile",
                    format!("{name:?}"),
                    format!(
                        "one of {}, or a custom board with `profile_file`",
                        crate::hardware::names().iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
            Ok(HardwareConfig { profile, origin: name })
        }
    }
}

fn housing(h: RawHousing, board: Option<&crate::hardware::HousingSwitch>) -> Result<HousingConfig, ConfigError> {
    let chip = match (h.chip, board) {
        (Some(c), _) => c,
        (None, Some(b)) => b.chip.clone(),
        (None, None) => {
            return Err(err(
                "tamper.housing.chip",
                "",
                "missing, and the board profile names no housing switch; the GPIO character device, e.g. \"/dev/gpiochip0\"",
            ));
        }
    };
    if !chip.to_string_lossy().starts_with("/dev/gpiochip") {
        return Err(err(
            "tamper.housing.chip",
            format!("{:?}", chip.display().to_string()),
            "a GPIO character device such as \"/dev/gpiochip0\"",
        ));
    }
    let line = match (h.line, board) {
        (Some(l), _) => l,
        (None, Some(b)) => b.line,
        (None, None) => required(h.line, "tamper.housing.line", "the line offset on the chip, e.g. 17")?,
    };
    let open_when_high = match h.open_when.as_deref().unwrap_or("high") {
        "high" => true,
        "low" => false,
        other => {
            return Err(err(
                "tamper.housing.open_when",
                format!("{other:?}"),
                "\"high\" or \"low\": the level that means the housing is open",
            ));
        }
    };
    let debounce = duration(h.debounce, "tamper.housing.debounce", "200ms", Duration::ZERO, Duration::from_secs(10))?;
    Ok(HousingConfig { chip, line, open_when_high, debounce })
}

fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() { p } else { base.join(p) }
}

/// `mqtt://host[:port]` or `mqtts://host[:port]`: scheme, host and port.
pub fn parse_mqtt_url(url: &str) -> Result<(MqttScheme, String, u16), String> {
    let expected = "mqtts://host:port or mqtt://host:port";
    let (scheme, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (MqttScheme::Tls, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (MqttScheme::Plain, r)
    } else {
        return Err(format!("unsupported scheme; expected {expected}"));
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('@') {
        return Err(format!("no path or credentials in the URL; expected {expected}"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port: u16 =
                p.parse().map_err(|_| format!("port {p:?} is not a number from 1 to 65535; expected {expected}"))?;
            if port == 0 {
                return Err(format!("port 0 is not a port; expected {expected}"));
            }
            (h.trim_start_matches('[').trim_end_matches(']').to_string(), port)
        }
        _ => (rest.to_string(), if scheme == MqttScheme::Tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(format!("no host; expected {expected}"));
    }
    Ok((scheme, host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[box]
id = "vakt-0001"
site = "stora-torget"
state_dir = "state"
[source]
uri = "test://ball"
[mqtt]
url = "mqtt://127.0.0.1:1883"
insecure_plaintext = true
[storage]
record = false
[[privacy.masks]]
name = "window"
points = [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]]
[[zones]]
name = "square"
points = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]
"#;

    fn parse_ok(t: &str) -> Config {
        parse(t, Path::new("/etc/vakt")).unwrap()
    }

    fn parse_err(t: &str) -> String {
        parse(t, Path::new("/etc/vakt")).unwrap_err().to_string()
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse_ok(GOOD);
        assert_eq!(c.box_.id, "vakt-0001");
        assert_eq!(c.mqtt.prefix, "vakt/stora-torget/vakt-0001");
        assert_eq!(c.mqtt.port, 1883);
        assert_eq!(c.box_.state_dir, Path::new("/etc/vakt/state"));
        assert_eq!(c.storage.dir, Path::new("/etc/vakt/state/ring"));
        assert!(!c.storage.record);
        assert_eq!(c.storage.max_age, Duration::from_secs(24 * 3600));
        assert_eq!(c.privacy.masks.len(), 1);
        assert_eq!(c.zones[0].name, "square");
        assert_eq!(c.digest.len(), 64);
    }

    #[test]
    fn errors_name_key_value_and_expectation() {
        let cases = [
            (GOOD.replace("record = false", ""), "`storage.record`", "explicitly"),
            (GOOD.replace("mqtt://127.0.0.1:1883", "ftp://x"), "`mqtt.url` = \"ftp://x\"", "mqtts://"),
            (GOOD.replace("mqtt://127.0.0.1:1883", "mqtt://h:99999"), "`mqtt.url`", "port"),
            (GOOD.replace("test://ball", "gopher://cam"), "`source.uri` = \"gopher://cam\"", "rtsp://"),
            (
                GOOD.replace("record = false", "record = false\nmax_age = \"30d\""),
                "`storage.max_age` = \"30d\"",
                "between",
            ),
            (
                GOOD.replace("record = false", "record = false\nmax_age = \"soon\""),
                "`storage.max_age` = \"soon\"",
                "duration",
            ),
            (
                GOOD.replace("[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]", "[0.1, 0.1], [0.3, 0.1]"),
                "`privacy.masks[0].points`",
                "at least 3",
            ),
            (
                GOOD.replace("[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]", "[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]"),
                "`privacy.masks[0].points`",
                "intersect itself",
            ),
            (
                GOOD.replace("[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]", "[0, 0], [1, 0], [1, 1], [0, 1]"),
                "`privacy.masks[0].points`",
                "whole frame",
            ),
            (
                GOOD.replace("site = \"stora-torget\"", "site = \"Stora Torget\""),
                "`box.site` = \"Stora Torget\"",
                "a-z",
            ),
            (GOOD.replace("id = \"vakt-0001\"", "id = \"vakt_0001\""), "`box.id` = \"vakt_0001\"", "DNS name"),
            (GOOD.replace("[storage]", "[storage]\ncolour = 1"), "unknown field `colour`", "record"),
            (format!("{GOOD}\n[motion]\nwidth = 7"), "`motion.width` = 7", "even"),
            (format!("{GOOD}\n[mqtt2]\n"), "unknown field `mqtt2`", ""),
            (
                format!("{GOOD}\n[tamper]\ncheck_interval = \"5s\"\nstart_after = \"3s\"\n"),
                "`tamper.check_interval` = \"5s\"",
                "must not exceed",
            ),
            (
                GOOD.replace("[mqtt]", "[mqtt]\nembedded_broker = \"0.0.0.0:1883\""),
                "`mqtt.embedded_broker`",
                "loopback",
            ),
            ("[box\n".to_string(), "invalid TOML", ""),
        ];
        for (text, want_a, want_b) in cases {
            let e = parse_err(&text);
            assert!(e.contains(want_a) && e.contains(want_b), "want {want_a:?} and {want_b:?}, got: {e}");
        }
    }

    #[test]
    fn masks_together_covering_the_frame_are_refused() {
        let t = GOOD.replace(
            "[[zones]]",
            "[[privacy.masks]]\nname = \"left\"\npoints = [[0, 0], [0.6, 0], [0.6, 1], [0, 1]]\n[[privacy.masks]]\nname = \"right\"\npoints = [[0.5, 0], [1, 0], [1, 1], [0.5, 1]]\n[[zones]]",
        );
        assert!(parse_err(&t).contains("cover the whole frame"));
    }

    #[test]
    fn housing_switch_config() {
        let c =
            parse_ok(&format!("{GOOD}\n[tamper.housing]\nchip = \"/dev/gpiochip1\"\nline = 17\nopen_when = \"low\"\n"));
        let h = c.tamper.housing.unwrap();
        assert_eq!((h.chip.as_path(), h.line, h.open_when_high), (Path::new("/dev/gpiochip1"), 17, false));
        assert_eq!(h.debounce, Duration::from_millis(200));
        let e =
            parse_err(&format!("{GOOD}\n[tamper.housing]\nchip = \"/dev/gpiochip0\"\nline = 3\nopen_when = \"up\"\n"));
        assert!(e.contains("`tamper.housing.open_when` = \"up\""), "{e}");
        let e = parse_err(&format!("{GOOD}\n[tamper.housing]\nchip = \"/tmp/x\"\nline = 3\n"));
        assert!(e.contains("tamper.housing.chip"), "{e}");
        assert!(parse_ok(GOOD).tamper.housing.is_none());
    }

    #[test]
    fn board_profiles() {
        assert_eq!(parse_ok(GOOD).hardware.profile.name, "generic");
        let c = parse_ok(&format!("{GOOD}\n[hardware]\nprofile = \"raspberry-pi-5\"\n"));
        assert!(!c.hardware.profile.gstreamer.encoder_hardware);
        // the board's housing switch fills in chip and line
        let c = parse_ok(&format!(
            "{GOOD}\n[hardware]\nprofile = \"raspberry-pi-5\"\n[tamper.housing]\nopen_when = \"low\"\n"
        ));
        let h = c.tamper.housing.unwrap();
        assert_eq!((h.chip.as_path(), h.line), (Path::new("/dev/gpiochip0"), 17));
        let e = parse_err(&format!("{GOOD}\n[tamper.housing]\nopen_when = \"low\"\n"));
        assert!(e.contains("`tamper.housing.chip`") && e.contains("board profile names no housing switch"), "{e}");
        let e = parse_err(&format!("{GOOD}\n[hardware]\nprofile = \"pi5\"\n"));
        assert!(e.contains("`hardware.profile` = \"pi5\"") && e.contains("\"raspberry-pi-5\""), "{e}");
        let e = parse_err(&format!("{GOOD}\n[hardware]\nprofile = \"generic\"\nprofile_file = \"b.toml\"\n"));
        assert!(e.contains("not both"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.toml"), "name = \"b\"\n").unwrap();
        let e = parse(&format!("{GOOD}\n[hardware]\nprofile_file = \"b.toml\"\n"), dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("`hardware.profile_file`")
                && e.contains("not a valid board profile")
                && e.contains("missing field"),
            "{e}"
        );
        let e = parse_err(&format!("{GOOD}\n[hardware]\nprofile_file = \"/nonexistent/b.toml\"\n"));
        assert!(e.contains("cannot read the board profile"), "{e}");
    }

    #[test]
    fn plaintext_mqtt_must_be_chosen_knowingly() {
        let e = parse_err(&GOOD.replace("insecure_plaintext = true\n", ""));
        assert!(e.contains("`mqtt.url`") && e.contains("insecure_plaintext = true") && e.contains("mqtts://"), "{e}");
        let e = parse_err(&GOOD.replace("mqtt://127.0.0.1:1883", "mqtts://broker:8883"));
        assert!(e.contains("`mqtt.insecure_plaintext`"), "{e}");
        assert!(parse_ok(GOOD).mqtt.insecure_plaintext);
    }

    #[test]
    fn mqtt_ca_file_needs_tls() {
        let e = parse_err(&GOOD.replace("[mqtt]", "[mqtt]\nca_file = \"ca.pem\""));
        assert!(e.contains("`mqtt.ca_file`") && e.contains("mqtts://"), "{e}");
        let tls = GOOD
            .replace("mqtt://127.0.0.1:1883", "mqtts://broker:8883")
            .replace("insecure_plaintext = true\n", "")
            .replace("[mqtt]", "[mqtt]\nca_file = \"ca.pem\"");
        let dir = tempfile::tempdir().unwrap();
        let e = parse(&tls, dir.path()).unwrap_err().to_string();
        assert!(e.contains("`mqtt.ca_file`") && e.contains("cannot read"), "{e}");
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        let e = parse(&tls, dir.path()).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
            .unwrap();
        let c = parse(&tls, dir.path()).unwrap();
        assert_eq!(c.mqtt.ca_file.unwrap(), dir.path().join("ca.pem"));
        assert_eq!(parse_ok(GOOD).models.dir, Path::new("/usr/share/vakt/models"));
    }

    #[test]
    fn detection_rules_zones_and_lines() {
        let c = parse_ok(GOOD);
        assert!(c.detect.enabled);
        assert_eq!((c.detect.model.as_str(), c.detect.width), ("yolox_nano", 416));
        assert_eq!((c.detect.interval, c.detect.idle_interval), (Duration::from_millis(200), Duration::from_secs(2)));
        assert_eq!(c.rules.presence_classes, ObjectClass::ALL.to_vec());
        assert_eq!((c.zones[0].loiter_time, c.zones[0].crowd_size), (Duration::from_secs(60), 10));
        assert!(c.lines.is_empty());
        let c = parse_ok(
            &format!(
                "{GOOD}\n[rules]\ncrowd_size = 4\npresence_classes = [\"person\", \"car\", \"person\"]\n\
             [[lines]]\nname = \"kerb\"\npoints = [[0.1, 0.5], [0.9, 0.5]]\nclasses = [\"person\"]\n"
            )
            .replace("name = \"square\"", "name = \"square\"\nloiter_time = \"30s\""),
        );
        assert_eq!(c.rules.presence_classes, vec![ObjectClass::Person, ObjectClass::Car]);
        assert_eq!((c.zones[0].loiter_time, c.zones[0].crowd_size), (Duration::from_secs(30), 4));
        assert_eq!(
            (c.lines[0].a, c.lines[0].b, &c.lines[0].classes),
            ([0.1, 0.5], [0.9, 0.5], &vec![ObjectClass::Person])
        );
        let cases = [
            (format!("{GOOD}\n[detect]\nmodel = \"yolo9000\"\n"), "`detect.model` = \"yolo9000\"", "\"yolox_nano\""),
            (format!("{GOOD}\n[detect]\nwidth = 200\n"), "`detect.width` = 200", "motion.width"),
            (format!("{GOOD}\n[detect]\nlow_score = 0.6\n"), "`detect.low_score` = 0.6", "high_score"),
            (
                format!("{GOOD}\n[detect]\ninterval = \"3s\"\n"),
                "`detect.interval` = \"3s\"",
                "at most detect.idle_interval (2s)",
            ),
            (
                format!("{GOOD}\n[rules]\npresence_classes = [\"dog\"]\n"),
                "`rules.presence_classes[0]` = \"dog\"",
                "\"person\"",
            ),
            (format!("{GOOD}\n[rules]\ncrowd_size = 0\n"), "`rules.crowd_size` = 0", "more than"),
            (
                GOOD.replace("name = \"square\"", "name = \"square\"\ncrowd_size = 0"),
                "`zones[0].crowd_size` = 0",
                "1 to 1000",
            ),
            (
                GOOD.replace("name = \"square\"", "name = \"square\"\nloiter_time = \"1y\""),
                "`zones[0].loiter_time`",
                "between",
            ),
            (GOOD.replace("name = \"square\"", "name = \"Square\""), "`zones[0].name` = \"Square\"", "a-z"),
            (format!("{GOOD}\n[[lines]]\nname = \"l\"\npoints = [[0.1, 0.5]]\n"), "`lines[0].points`", "two distinct"),
            (
                format!("{GOOD}\n[[lines]]\nname = \"l\"\npoints = [[0.1, 0.5], [0.1, 0.5]]\n"),
                "`lines[0].points`",
                "0.01 apart",
            ),
            (
                format!("{GOOD}\n[[lines]]\nname = \"l\"\npoints = [[0.1, 0.5], [0.2, 0.5]]\nclasses = []\n"),
                "`lines[0].classes`",
                "at least one",
            ),
            (format!("{GOOD}\n[[lines]]\npoints = [[0.1, 0.5], [0.2, 0.5]]\n"), "`lines[0].name`", "needs a name"),
        ];
        for (text, want_a, want_b) in cases {
            let e = parse_err(&text);
            assert!(e.contains(want_a) && e.contains(want_b), "want {want_a:?} and {want_b:?}, got: {e}");
        }
        // detection off: no constraint between the detector's width and motion's
        assert!(!parse_ok(&format!("{GOOD}\n[detect]\nenabled = false\nwidth = 200\n")).detect.enabled);
    }

    #[test]
    fn redaction_config() {
        use crate::redaction::MaskMode;
        let c = parse_ok(GOOD);
        assert_eq!((c.redact.mode, c.redact.motion, c.redact.faces), (MaskMode::Solid, true, true));
        assert_eq!((c.redact.hold, c.redact.max_staleness), (Duration::from_secs(1), Duration::from_millis(500)));
        let p = c.redact.params(Some(4));
        assert_eq!((p.keep_track, p.max_staleness, p.margin), (Some(4), 0.5, 0.2));
        let c = parse_ok(&format!("{GOOD}\n[redact]\nmode = \"blur\"\nhold = \"3s\"\nmotion = false\nfaces = false\n"));
        assert_eq!((c.redact.mode, c.redact.hold, c.redact.motion), (MaskMode::Blur, Duration::from_secs(3), false));
        assert!(!c.redact.faces);
        let cases = [
            (format!("{GOOD}\n[redact]\nmode = \"smudge\"\n"), "`redact.mode` = \"smudge\"", "\"pixelate\""),
            (format!("{GOOD}\n[redact]\nmargin = -0.1\n"), "`redact.margin` = -0.1", "0"),
            (
                format!("{GOOD}\n[redact]\nmax_staleness = \"100ms\"\n"),
                "`redact.max_staleness` = \"100ms\"",
                "at least detect.interval (200ms)",
            ),
            (format!("{GOOD}\n[redact]\nblur = true\n"), "blur", "unknown field"),
        ];
        for (text, want_a, want_b) in cases {
            let e = parse_err(&text);
            assert!(e.contains(want_a) && e.contains(want_b), "want {want_a:?} and {want_b:?}, got: {e}");
        }
    }

    #[test]
    fn mqtt_urls() {
        assert_eq!(
            parse_mqtt_url("mqtts://broker.example:8883").unwrap(),
            (MqttScheme::Tls, "broker.example".into(), 8883)
        );
        assert_eq!(parse_mqtt_url("mqtts://broker").unwrap().2, 8883);
        assert_eq!(parse_mqtt_url("mqtt://[::1]:1884").unwrap(), (MqttScheme::Plain, "::1".into(), 1884));
        assert!(parse_mqtt_url("mqtt://user:pw@host:1883").is_err());
        assert!(parse_mqtt_url("mqtt://:1883").is_err());
    }
}
