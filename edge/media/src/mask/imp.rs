//! Implementation of `vaktstaticmask` (see `mod.rs`).

use std::sync::LazyLock;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::subclass::prelude::*;
use gstreamer_base::subclass::BaseTransformMode;
use gstreamer_base::subclass::prelude::*;
use gstreamer_video::prelude::*;
use gstreamer_video::subclass::prelude::*;
use gstreamer_video::{VideoFormat, VideoFrameRef, VideoInfo};

use vakt_core::geometry::{Polygon, Raster};

#[derive(Default)]
struct Settings {
    polygons: Vec<Polygon>,
}

/// Exists only while caps are set: one raster per plane at that plane's resolution.
struct State {
    format: VideoFormat,
    planes: Vec<(Raster, usize)>, // (raster, bytes per pixel)
}

#[derive(Default)]
pub struct StaticMask {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    frames: AtomicU64,
}

impl StaticMask {
    pub(super) fn set_polygons(&self, polygons: Vec<Polygon>) {
        self.settings.lock().unwrap().polygons = polygons;
        // Force re-rasterisation on the next caps; until then no state means no frame passes.
        *self.state.lock().unwrap() = None;
    }

    pub(super) fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for StaticMask {
    const NAME: &'static str = super::TYPE_NAME;
    type Type = super::StaticMask;
    type ParentType = gstreamer_video::VideoFilter;
}

impl ObjectImpl for StaticMask {}
impl GstObjectImpl for StaticMask {}

impl ElementImpl for StaticMask {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Vakt static privacy mask",
                "Filter/Effect/Video",
                "Fills every pixel touched by a privacy polygon, in place",
                "Vakt developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gstreamer_video::VideoCapsBuilder::new().format_list(super::FORMATS.iter().copied()).build();
            vec![
                gst::PadTemplate::new("src", gst::PadDirection::Src, gst::PadPresence::Always, &caps).unwrap(),
                gst::PadTemplate::new("sink", gst::PadDirection::Sink, gst::PadPresence::Always, &caps).unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for StaticMask {
    // P3: never passthrough, always write into the (made-writable) buffer.
    const MODE: BaseTransformMode = BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = true;
}

impl VideoFilterImpl for StaticMask {
    fn set_info(
        &self,
        incaps: &gst::Caps,
        in_info: &VideoInfo,
        outcaps: &gst::Caps,
        out_info: &VideoInfo,
    ) -> Result<(), gst::LoggableError> {
        let polygons = self.settings.lock().unwrap().polygons.clone();
        let finfo = in_info.format_info();
        // P2: the full-resolution raster decides; a subsampled (chroma) sample is masked when any
        // of the pixels it covers is, so no colour survives next to a masked pixel.
        let full = Raster::conservative(&polygons, in_info.width(), in_info.height());
        let mut planes = Vec::new();
        for p in 0..finfo.n_planes() {
            let comp = (0..finfo.n_components()).find(|&c| finfo.plane()[c as usize] == p).unwrap_or(0);
            let (sx, sy) = (1u32 << finfo.w_sub()[comp as usize], 1u32 << finfo.h_sub()[comp as usize]);
            let raster = if (sx, sy) == (1, 1) { full.clone() } else { full.subsample(sx, sy) };
            let bpp = super::fill_value(in_info.format(), p).len();
            planes.push((raster, bpp));
        }
        *self.state.lock().unwrap() = Some(State { format: in_info.format(), planes });
        self.parent_set_info(incaps, in_info, outcaps, out_info)
    }

    fn transform_frame_ip(
        &self,
        frame: &mut VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let state = self.state.lock().unwrap();
        // P4: no state (no caps, or masks changed) means fail closed: the frame is not passed on.
        let Some(state) = state.as_ref() else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ["privacy mask has no caps; refusing the frame"]
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        for (p, (raster, bpp)) in state.planes.iter().enumerate() {
            let stride = frame.plane_stride()[p] as usize;
            let data = frame.plane_data_mut(p as u32).map_err(|_| gst::FlowError::Error)?;
            raster.fill(data, stride, *bpp, super::fill_value(state.format, p as u32));
        }
        self.frames.fetch_add(1, Ordering::Relaxed);
        Ok(gst::FlowSuccess::Ok)
    }
}
