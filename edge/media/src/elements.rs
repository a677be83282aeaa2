//! The GStreamer elements a board profile names: are they installed, and which decoders should
//! decodebin prefer.

use gstreamer as gst;
use gstreamer::prelude::*;

/// True when the element's plugin is installed and loads.
pub fn available(name: &str) -> bool {
    gst::init().is_ok() && gst::ElementFactory::find(name).is_some()
}

/// Ranks the installed decoders of `names` above every other decoder, in the given order, so that
/// decodebin picks them (hardware decoders on a board). Returns the names that are not installed.
pub fn prefer_decoders(names: &[String]) -> Vec<String> {
    if gst::init().is_err() {
        return names.to_vec();
    }
    let mut missing = Vec::new();
    let top = i32::from(gst::Rank::PRIMARY) + 100;
    for (i, name) in names.iter().enumerate() {
        match gst::ElementFactory::find(name) {
            Some(f) => f.set_rank(gst::Rank::from(top + (names.len() - i) as i32)),
            None => missing.push(name.clone()),
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_installed_elements_and_ranks_preferred_decoders() {
        assert!(available("videotestsrc"));
        assert!(!available("no-such-element-vakt"));
        let missing = prefer_decoders(&["jpegdec".to_string(), "no-such-decoder".to_string()]);
        assert_eq!(missing, vec!["no-such-decoder".to_string()]);
        let rank = i32::from(gst::ElementFactory::find("jpegdec").unwrap().rank());
        assert!(rank > i32::from(gst::Rank::PRIMARY), "rank {rank}");
    }
}
