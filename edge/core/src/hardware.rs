//! Board profiles: what a board offers the box (capture, decode and encode elements, the housing
//! switch's GPIO line, where footage keys can live, storage endurance, power, analysis rate).
//! Profiles are data (`hardware/*.toml`, schema in `hardware/README.md`); the shipped ones are
//! compiled in, and a custom board can name its own file with `[hardware] profile_file`.

use std::path::PathBuf;

use serde::Deserialize;

/// The profiles shipped with the box: (name, TOML text). `generic` is the fallback.
pub const BUILTIN: &[(&str, &str)] = &[
    ("generic", include_str!("../../../hardware/generic.toml")),
    ("raspberry-pi-4", include_str!("../../../hardware/raspberry-pi-4.toml")),
    ("raspberry-pi-5", include_str!("../../../hardware/raspberry-pi-5.toml")),
    ("rk3588", include_str!("../../../hardware/rk3588.toml")),
    ("jetson-orin-nano", include_str!("../../../hardware/jetson-orin-nano.toml")),
    ("jetson-orin-nx", include_str!("../../../hardware/jetson-orin-nx.toml")),
];

/// The profile used when the config names none.
pub const DEFAULT: &str = "generic";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub board: String,
    pub soc: String,
    #[serde(default)]
    pub notes: Vec<String>,
    pub gstreamer: GstProfile,
    pub keys: KeysProfile,
    pub storage: StorageProfile,
    pub power: PowerProfile,
    pub analysis: AnalysisProfile,
    pub housing_switch: Option<HousingSwitch>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GstProfile {
    /// Element that captures `camera://` sources (v4l2src, libcamerasrc, nvarguscamerasrc).
    pub camera_source: String,
    #[serde(default)]
    pub camera_packages: Vec<String>,
    /// Hardware decoders preferred over software ones when installed, best first.
    #[serde(default)]
    pub decoders: Vec<String>,
    /// H.264 encoder for the ring buffer.
    pub encoder: String,
    pub encoder_hardware: bool,
    #[serde(default)]
    pub encoder_packages: Vec<String>,
}

/// Where the key that wraps footage keys can live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyProvider {
    /// RAM only: footage becomes unreadable after a power cut.
    Ram,
    /// A TPM 2.0 (`/dev/tpmrm0`).
    Tpm2,
    /// eMMC replay-protected memory block.
    Rpmb,
    /// A device-unique key in one-time-programmable memory.
    Otp,
    /// A 32-byte key delivered by systemd as an encrypted credential (`LoadCredentialEncrypted=
    /// vakt-footage-key`), sealed by the board's TPM 2.0 where it has one.
    Credential,
}

impl KeyProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyProvider::Ram => "ram",
            KeyProvider::Tpm2 => "tpm2",
            KeyProvider::Rpmb => "rpmb",
            KeyProvider::Otp => "otp",
            KeyProvider::Credential => "credential",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysProfile {
    pub provider: KeyProvider,
    /// A device node that must exist for the provider ("" for RAM).
    #[serde(default)]
    pub device: String,
    /// `tpm2` only: the TSS2 TCTI that reaches the TPM; default `device:<device>`. A software TPM
    /// for tests: `swtpm:host=127.0.0.1,port=2321`.
    #[serde(default)]
    pub tcti: Option<String>,
}

impl KeysProfile {
    /// The TCTI string tpm2-tools use for this board's TPM.
    pub fn tcti(&self) -> String {
        self.tcti.clone().unwrap_or_else(|| format!("device:{}", self.device))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageProfile {
    pub device: String,
    pub endurance: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerProfile {
    /// Typical draw in watts under load (0: unknown).
    pub budget_w: f64,
    pub supply: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisProfile {
    /// Detector runs per second the board sustains (0: unknown).
    pub fps: f64,
    /// How that figure was obtained.
    pub basis: String,
}

/// Default GPIO line of the enclosure's tamper switch.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HousingSwitch {
    pub chip: PathBuf,
    pub line: u32,
}

/// Names of the built-in profiles, for error messages.
pub fn names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// A built-in profile by name.
pub fn builtin(name: &str) -> Option<Profile> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, text)| parse(text).expect("built-in profiles parse (tested)"))
}

/// Parses and checks a profile's text. The error names the key and what is wrong.
pub fn parse(text: &str) -> Result<Profile, String> {
    let de = toml::Deserializer::parse(text).map_err(|e| format!("invalid TOML: {}", e.to_string().trim_end()))?;
    let p: Profile = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let msg = e.into_inner().message().to_string();
        if key.is_empty() || key == "." { msg } else { format!("`{key}`: {msg}") }
    })?;
    check(&p)?;
    Ok(p)
}

fn element_name_ok(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn check(p: &Profile) -> Result<(), String> {
    let name_ok = !p.name.is_empty()
        && p.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !p.name.starts_with('-');
    if !name_ok {
        return Err(format!("`name` = {:?}: a-z, 0-9 and '-'", p.name));
    }
    let g = &p.gstreamer;
    for (key, v) in [("gstreamer.camera_source", &g.camera_source), ("gstreamer.encoder", &g.encoder)] {
        if !element_name_ok(v) {
            return Err(format!("`{key}` = {v:?}: a GStreamer element name such as \"v4l2src\""));
        }
    }
    if let Some(d) = g.decoders.iter().find(|d| !element_name_ok(d)) {
        return Err(format!("`gstreamer.decoders`: {d:?} is not a GStreamer element name"));
    }
    match p.keys.provider {
        KeyProvider::Ram | KeyProvider::Credential if !p.keys.device.is_empty() => {
            return Err(format!(
                "`keys.device` = {:?}: the {} provider needs no device; write \"\"",
                p.keys.device,
                p.keys.provider.as_str()
            ));
        }
        KeyProvider::Tpm2 | KeyProvider::Rpmb | KeyProvider::Otp if !p.keys.device.starts_with("/dev/") => {
            return Err(format!(
                "`keys.device` = {:?}: the {} provider needs the device node it uses, e.g. \"/dev/tpmrm0\"",
                p.keys.device,
                p.keys.provider.as_str()
            ));
        }
        _ => {}
    }
    if let Some(t) = &p.keys.tcti
        && (p.keys.provider != KeyProvider::Tpm2 || t.is_empty() || t.chars().any(|c| c.is_whitespace()))
    {
        return Err(format!(
            "`keys.tcti` = {t:?}: only for provider \"tpm2\", a TCTI such as \"device:/dev/tpmrm0\" (no spaces)"
        ));
    }
    if !p.power.budget_w.is_finite() || !(0.0..=500.0).contains(&p.power.budget_w) {
        return Err(format!("`power.budget_w` = {}: watts from 0 (unknown) to 500", p.power.budget_w));
    }
    if !p.analysis.fps.is_finite() || !(0.0..=240.0).contains(&p.analysis.fps) {
        return Err(format!("`analysis.fps` = {}: runs per second from 0 (unknown) to 240", p.analysis.fps));
    }
    if p.analysis.basis.trim().is_empty() {
        return Err("`analysis.basis`: say how the analysis rate was obtained".into());
    }
    if let Some(h) = &p.housing_switch
        && !h.chip.to_string_lossy().starts_with("/dev/gpiochip")
    {
        return Err(format!(
            "`housing_switch.chip` = {:?}: a GPIO character device such as \"/dev/gpiochip0\"",
            h.chip
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_profile_parses_and_is_compiled_in() {
        let on_disk = crate::toml_stems("hardware");
        let mut built: Vec<String> = names().iter().map(|s| s.to_string()).collect();
        built.sort();
        assert_eq!(on_disk, built, "every hardware/*.toml must be listed in BUILTIN");
        for (name, text) in BUILTIN {
            let p = parse(text).unwrap_or_else(|e| panic!("hardware/{name}.toml: {e}"));
            assert_eq!(&p.name, name, "`name` must equal the file stem");
        }
        assert!(builtin(DEFAULT).is_some());
    }

    #[test]
    fn the_facts_the_issue_insists_on() {
        let pi5 = builtin("raspberry-pi-5").unwrap();
        assert!(!pi5.gstreamer.encoder_hardware, "the Pi 5 has no hardware H.264 encoder");
        assert_eq!(pi5.gstreamer.encoder, "x264enc");
        assert_eq!(pi5.gstreamer.camera_source, "libcamerasrc");
        let pi4 = builtin("raspberry-pi-4").unwrap();
        assert_eq!((pi4.gstreamer.encoder.as_str(), pi4.gstreamer.encoder_hardware), ("v4l2h264enc", true));
        assert_eq!(builtin("rk3588").unwrap().gstreamer.encoder, "mpph264enc");
        let nano = builtin("jetson-orin-nano").unwrap();
        assert!(!nano.gstreamer.encoder_hardware, "the Orin Nano has no NVENC");
        assert_eq!(builtin("jetson-orin-nx").unwrap().gstreamer.encoder, "nvv4l2h264enc");
    }

    #[test]
    fn bad_profiles_name_the_key() {
        let good = BUILTIN[0].1;
        let cases = [
            (good.replace("provider = \"ram\"", "provider = \"hsm\""), "keys.provider"),
            (good.replace("provider = \"ram\"", "provider = \"tpm2\""), "keys.device"),
            (good.replace("encoder = \"x264enc\"", "encoder = \"x264enc ! fakesink\""), "gstreamer.encoder"),
            (good.replace("budget_w = 0.0", "budget_w = -3.0"), "power.budget_w"),
            (good.replace("[power]", "[power]\nvolts = 5"), "unknown field `volts`"),
            (format!("{good}\n[housing_switch]\nchip = \"/tmp/x\"\nline = 3\n"), "housing_switch.chip"),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "want {want:?} in: {e}");
        }
    }
}
