//! `vaktstaticmask`: the static privacy-mask stage. It fills every pixel that a privacy polygon
//! touches, at full resolution, in place, directly after decode and upstream of every branch.
//! Design: `edge/docs/design/privacy-levels.md` (invariants P1–P4).

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::subclass::prelude::*;

use vakt_core::geometry::Polygon;

mod imp;

glib::wrapper! {
    pub struct StaticMask(ObjectSubclass<imp::StaticMask>)
        @extends gstreamer_video::VideoFilter, gstreamer_base::BaseTransform, gst::Element, gst::Object;
}

/// The element's type name, used by the pipeline-graph check.
pub const TYPE_NAME: &str = "VaktStaticMask";

impl StaticMask {
    /// A mask stage for `polygons` (normalised coordinates). An empty list masks nothing but the
    /// stage is still in the graph, so every path keeps passing it.
    pub fn new(name: &str, polygons: Vec<Polygon>) -> StaticMask {
        let e: StaticMask = glib::Object::builder().property("name", name).build();
        e.imp().set_polygons(polygons);
        e
    }

    /// Frames masked since the element started.
    pub fn frames(&self) -> u64 {
        self.imp().frames()
    }
}

/// Fill values: black in each supported format.
pub(crate) fn fill_value(format: gstreamer_video::VideoFormat, plane: u32) -> &'static [u8] {
    use gstreamer_video::VideoFormat as F;
    match (format, plane) {
        (F::I420 | F::Yv12 | F::Y42b | F::Y444, 0) => &[16],
        (F::I420 | F::Yv12 | F::Y42b | F::Y444, _) => &[128],
        (F::Nv12 | F::Nv21, 0) => &[16],
        (F::Nv12 | F::Nv21, _) => &[128, 128],
        (F::Gray8, _) => &[0],
        (F::Rgb | F::Bgr, _) => &[0, 0, 0],
        (F::Rgbx | F::Bgrx | F::Xrgb | F::Xbgr, _) => &[0, 0, 0, 0],
        _ => &[0],
    }
}

pub(crate) const FORMATS: &[gstreamer_video::VideoFormat] = {
    use gstreamer_video::VideoFormat as F;
    &[
        F::I420,
        F::Yv12,
        F::Y42b,
        F::Y444,
        F::Nv12,
        F::Nv21,
        F::Gray8,
        F::Rgb,
        F::Bgr,
        F::Rgbx,
        F::Bgrx,
        F::Xrgb,
        F::Xbgr,
    ]
};
