//! Walks a running pipeline and proves that decoded video reaches no sink without passing the
//! static mask stage. Design: `edge/docs/design/privacy-levels.md` (P1).

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::mask::TYPE_NAME;

/// Elements that produce raw or decodable pictures: reaching one of them upstream of a sink
/// before the mask stage means unmasked pictures can reach that sink.
fn produces_pictures(e: &gst::Element) -> bool {
    let Some(f) = e.factory() else { return false };
    let klass = f.metadata(gst::ELEMENT_METADATA_KLASS).unwrap_or_default();
    // appsrc can inject any picture: treat it as a producer too
    klass.contains("Decoder") || (klass.contains("Source") && klass.contains("Video")) || f.name() == "appsrc"
}

/// The element feeding `sinkpad`, looking through ghost pads of bins in both directions.
fn upstream_element(sinkpad: &gst::Pad) -> Option<gst::Element> {
    let mut peer = sinkpad.peer()?;
    for _ in 0..64 {
        if let Some(ghost) = peer.downcast_ref::<gst::GhostPad>() {
            // a bin's src ghost pad: continue at the pad inside the bin
            peer = ghost.target()?;
            continue;
        }
        if let Some(ghost) = peer.parent().and_then(|p| p.downcast::<gst::GhostPad>().ok()) {
            // the internal proxy of a bin's sink ghost pad: continue outside the bin
            peer = ghost.peer()?;
            continue;
        }
        return peer.parent_element();
    }
    None
}

fn all_elements(bin: &gst::Bin) -> Vec<gst::Element> {
    bin.iterate_recurse().into_iter().filter_map(Result::ok).collect()
}

/// The result of walking a pipeline graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphReport {
    /// Paths from a sink upstream that reached the mask stage.
    pub masked_paths: usize,
    /// Paths from a picture producer to a sink that skip the mask stage, written
    /// `sink <- ... <- producer`.
    pub violations: Vec<String>,
}

impl GraphReport {
    pub fn is_safe(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Walks upstream from every sink of `pipeline` (bins included, recursively).
pub fn check(pipeline: &gst::Pipeline) -> GraphReport {
    let mut report = GraphReport::default();
    for e in all_elements(pipeline.upcast_ref()) {
        if e.is::<gst::Bin>() || !e.element_flags().contains(gst::ElementFlags::SINK) {
            continue;
        }
        walk(&e, &mut vec![e.name().to_string()], &mut report);
    }
    report
}

fn walk(e: &gst::Element, path: &mut Vec<String>, report: &mut GraphReport) {
    if e.type_().name() == TYPE_NAME {
        report.masked_paths += 1;
        return;
    }
    if produces_pictures(e) {
        report.violations.push(path.join(" <- "));
        return;
    }
    if path.len() > 64 {
        return;
    }
    for pad in e.sink_pads() {
        if let Some(up) = upstream_element(&pad) {
            path.push(up.name().to_string());
            walk(&up, path, report);
            path.pop();
        }
    }
}
