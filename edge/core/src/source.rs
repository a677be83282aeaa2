//! What a `source.uri` names: the camera or clip a box captures. Parsing only; the GStreamer
//! side (`vakt-media`) builds the capture for each kind.

use std::path::{Path, PathBuf};

/// A validated video source.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A network camera: `rtsp://` or `rtsps://` URL.
    Rtsp { url: String },
    /// A video file: `file:///path` or a plain path.
    File { path: PathBuf },
    /// Numbered still images, e.g. `dir/in%06d.jpg` (printf-style index).
    ImageSequence { pattern: PathBuf, start_index: u32 },
    /// A V4L2 device (`v4l2:///dev/video0`), including libcamera's V4L2 compatibility devices.
    V4l2 { device: PathBuf },
    /// The board's camera, captured by the element its board profile names (`libcamerasrc` on a
    /// Raspberry Pi 5, `nvarguscamerasrc` on a Jetson, `v4l2src` elsewhere): `camera://` for the
    /// default camera, `camera://NAME` for a libcamera camera name or Argus sensor id, or
    /// `camera:///dev/videoN` for a V4L2 device.
    Camera { name: String },
    /// GStreamer's built-in test pattern: `test://PATTERN?width=W&height=H&fps=F`.
    TestPattern { pattern: String, width: u32, height: u32, fps: u32 },
}

const PATTERNS: &[&str] = &["ball", "smpte", "snow", "black", "white", "gradient", "checkers-8", "pinwheel"];

impl SourceSpec {
    /// Parses a source URI; relative paths resolve against `base`. The error says what is accepted.
    pub fn parse(uri: &str, base: &Path) -> Result<SourceSpec, String> {
        let accepted = "accepted: rtsp://host/path, file:///path/clip.mp4, a plain path, dir/in%06d.jpg, v4l2:///dev/videoN, camera://, test://ball";
        if uri.starts_with("rtsp://") || uri.starts_with("rtsps://") {
            return Ok(SourceSpec::Rtsp { url: uri.to_string() });
        }
        if let Some(dev) = uri.strip_prefix("v4l2://") {
            if !dev.starts_with("/dev/video") {
                return Err(format!("a V4L2 source names a device such as v4l2:///dev/video0; {accepted}"));
            }
            return Ok(SourceSpec::V4l2 { device: PathBuf::from(dev) });
        }
        if let Some(name) = uri.strip_prefix("camera://") {
            let ok = name.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
            if !ok {
                return Err(format!("a camera name has no spaces or quotes; {accepted}"));
            }
            return Ok(SourceSpec::Camera { name: name.to_string() });
        }
        if let Some(rest) = uri.strip_prefix("test://") {
            return parse_test(rest).map_err(|e| format!("{e}; {accepted}"));
        }
        let path = if let Some(p) = uri.strip_prefix("file://") {
            if !p.starts_with('/') {
                return Err(format!("file:// URIs take an absolute path (file:///...); {accepted}"));
            }
            PathBuf::from(p)
        } else if uri.contains("://") {
            return Err(format!("unsupported URI scheme; {accepted}"));
        } else if uri.is_empty() {
            return Err(format!("empty; {accepted}"));
        } else {
            let p = PathBuf::from(uri);
            if p.is_absolute() { p } else { base.join(p) }
        };
        let s = path.to_string_lossy();
        if s.contains('%') {
            let start_index = first_index(&path)
                .ok_or_else(|| format!("no image matches the pattern (tried indices 0 and 1 of {})", path.display()))?;
            return Ok(SourceSpec::ImageSequence { pattern: path, start_index });
        }
        Ok(SourceSpec::File { path })
    }

    /// True for sources that play from storage (they can be paced and looped).
    pub fn is_stored(&self) -> bool {
        matches!(self, SourceSpec::File { .. } | SourceSpec::ImageSequence { .. })
    }
}

fn parse_test(rest: &str) -> Result<SourceSpec, String> {
    let (pattern, query) = rest.split_once('?').unwrap_or((rest, ""));
    let pattern = if pattern.is_empty() { "ball" } else { pattern };
    if !PATTERNS.contains(&pattern) {
        return Err(format!("unknown test pattern {pattern:?} (known: {})", PATTERNS.join(", ")));
    }
    let (mut width, mut height, mut fps) = (640u32, 480u32, 15u32);
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("test parameter {kv:?} is not key=value"))?;
        let n: u32 = v.parse().map_err(|_| format!("test parameter {k}={v:?} is not a whole number"))?;
        match k {
            "width" if (16..=3840).contains(&n) && n.is_multiple_of(2) => width = n,
            "height" if (16..=2160).contains(&n) && n.is_multiple_of(2) => height = n,
            "fps" if (1..=60).contains(&n) => fps = n,
            _ => {
                return Err(format!(
                    "test parameter {k}={n} not accepted (width 16..3840 even, height 16..2160 even, fps 1..60)"
                ));
            }
        }
    }
    Ok(SourceSpec::TestPattern { pattern: pattern.to_string(), width, height, fps })
}

/// `rtsp://user:secret@cam/x` → `rtsp://***@cam/x`: never print credentials. The user info ends at
/// the last `@` before the first `/` after the scheme.
pub fn without_credentials(uri: &str) -> String {
    let Some(s) = uri.find("://") else { return uri.to_string() };
    let rest = &uri[s + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(a) => format!("{}***{}", &uri[..s + 3], &rest[a..]),
        None => uri.to_string(),
    }
}

/// Expands a printf-style `%0Nd` / `%d` pattern for one index.
pub fn expand_pattern(pattern: &Path, index: u32) -> Option<PathBuf> {
    let s = pattern.to_string_lossy();
    let start = s.find('%')?;
    let rest = &s[start + 1..];
    let end = rest.find('d')?;
    let spec = &rest[..end];
    let width: usize = if spec.is_empty() { 0 } else { spec.trim_start_matches('0').parse().ok()? };
    Some(PathBuf::from(format!("{}{:0width$}{}", &s[..start], index, &rest[end + 1..])))
}

fn first_index(pattern: &Path) -> Option<u32> {
    (0..=1).find(|&i| expand_pattern(pattern, i).is_some_and(|p| p.is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        let b = Path::new("/base");
        assert_eq!(
            SourceSpec::parse("rtsp://cam/stream", b).unwrap(),
            SourceSpec::Rtsp { url: "rtsp://cam/stream".into() }
        );
        assert_eq!(SourceSpec::parse("file:///a/b.mp4", b).unwrap(), SourceSpec::File { path: "/a/b.mp4".into() });
        assert_eq!(SourceSpec::parse("clips/b.mp4", b).unwrap(), SourceSpec::File { path: "/base/clips/b.mp4".into() });
        assert_eq!(
            SourceSpec::parse("v4l2:///dev/video2", b).unwrap(),
            SourceSpec::V4l2 { device: "/dev/video2".into() }
        );
        assert_eq!(
            SourceSpec::parse("test://snow?width=320&height=240&fps=25", b).unwrap(),
            SourceSpec::TestPattern { pattern: "snow".into(), width: 320, height: 240, fps: 25 }
        );
        assert_eq!(SourceSpec::parse("camera://", b).unwrap(), SourceSpec::Camera { name: String::new() });
        assert_eq!(
            SourceSpec::parse("camera:///dev/video1", b).unwrap(),
            SourceSpec::Camera { name: "/dev/video1".into() }
        );
        for bad in
            ["gopher://x", "file://relative", "v4l2://eth0", "test://plaid", "test://ball?width=7", "", "camera://a b"]
        {
            let e = SourceSpec::parse(bad, b).unwrap_err();
            assert!(e.contains("accepted"), "{bad}: {e}");
        }
    }

    #[test]
    fn credentials_are_hidden() {
        assert_eq!(without_credentials("rtsp://u:p@ss@cam/x@y"), "rtsp://***@cam/x@y");
        assert_eq!(without_credentials("rtsp://cam/x@y"), "rtsp://cam/x@y");
        assert_eq!(without_credentials("mqtt://user:pw@host:1883"), "mqtt://***@host:1883");
        assert_eq!(without_credentials("/path/a@b.mp4"), "/path/a@b.mp4");
    }

    #[test]
    fn image_sequences_find_their_first_index() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("in000001.jpg"), b"x").unwrap();
        let pat = d.path().join("in%06d.jpg");
        let s = SourceSpec::parse(pat.to_str().unwrap(), Path::new("/")).unwrap();
        assert_eq!(s, SourceSpec::ImageSequence { pattern: pat.clone(), start_index: 1 });
        assert_eq!(expand_pattern(&pat, 42).unwrap(), d.path().join("in000042.jpg"));
        assert!(SourceSpec::parse(d.path().join("none%03d.png").to_str().unwrap(), Path::new("/")).is_err());
    }
}
