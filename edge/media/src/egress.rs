//! Egress: the ways pictures leave the box. Each takes `RedactedFrame`s only (P6), so nothing
//! below the redacted level can be handed to it. Today: an H.264 MP4 clip writer, used by
//! `vakt redact` and, later, by clip export. Design: `edge/docs/design/privacy.md`.

use std::path::{Path, PathBuf};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSrc;

use crate::privacy::RedactedFrame;

/// Writes redacted frames, one output frame per input frame, to an MP4 file (H.264, x264 on the
/// CPU). The pipeline is `appsrc "redacted" → x264enc → mp4mux → filesink`: its only picture
/// source is the appsrc, and only `push` feeds it.
pub struct ClipWriter {
    pipeline: gst::Pipeline,
    src: AppSrc,
    path: PathBuf,
    size: (u32, u32),
    first_t: Option<f64>,
    step_ns: u64,
    frames: u64,
}

impl ClipWriter {
    /// Starts a writer for `width` × `height` frames at `frame_rate` (numerator, denominator).
    pub fn create(path: &Path, width: u32, height: u32, frame_rate: (i32, i32)) -> Result<ClipWriter, String> {
        gst::init().map_err(|e| format!("GStreamer could not start: {e}"))?;
        if !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(format!("the video is {width}x{height}; H.264 output needs an even width and height"));
        }
        let (num, den) = if frame_rate.0 > 0 && frame_rate.1 > 0 { frame_rate } else { (25, 1) };
        let pipeline = gst::Pipeline::with_name("vakt-egress");
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", width as i32)
            .field("height", height as i32)
            .field("framerate", gst::Fraction::new(num, den))
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build();
        let src = AppSrc::builder().name("redacted").caps(&caps).format(gst::Format::Time).block(true).build();
        src.set_max_bytes(64 * 1024 * 1024);
        let make = |factory: &str| {
            gst::ElementFactory::make(factory).build().map_err(|_| {
                format!(
                    "GStreamer element {factory:?} is missing; install gstreamer1.0-plugins-ugly and -good (deploy/setup-dev.sh)"
                )
            })
        };
        let enc = make("x264enc")?;
        // constant quality (CRF 20), fast; a keyframe every two seconds so a clip seeks well
        enc.set_property_from_str("pass", "qual");
        enc.set_property("quantizer", 20u32);
        enc.set_property_from_str("speed-preset", "veryfast");
        enc.set_property("key-int-max", ((2 * num / den.max(1)).max(1)) as u32);
        let mux = make("mp4mux")?;
        let sink = make("filesink")?;
        sink.set_property("location", path.to_string_lossy().as_ref());
        pipeline.add_many([src.upcast_ref(), &enc, &mux, &sink]).map_err(|e| e.to_string())?;
        gst::Element::link_many([src.upcast_ref(), &enc, &mux, &sink]).map_err(|e| e.to_string())?;
        pipeline.set_state(gst::State::Playing).map_err(|e| {
            let _ = pipeline.set_state(gst::State::Null);
            format!("cannot start the encoder for {}: {e}", path.display())
        })?;
        let step_ns = (1e9 * den as f64 / num as f64).round() as u64;
        Ok(ClipWriter {
            pipeline,
            src,
            path: path.to_path_buf(),
            size: (width, height),
            first_t: None,
            step_ns,
            frames: 0,
        })
    }

    /// Appends one frame. Timestamps follow the frames' media time from the first frame on.
    pub fn push(&mut self, frame: &RedactedFrame) -> Result<(), String> {
        if (frame.width(), frame.height()) != self.size {
            return Err(format!(
                "frame {} is {}x{}, the clip is {}x{}: the size changed mid-stream",
                frame.index(),
                frame.width(),
                frame.height(),
                self.size.0,
                self.size.1
            ));
        }
        let first = *self.first_t.get_or_insert(frame.media_time_s());
        let mut buffer = gst::Buffer::from_mut_slice(frame.data().to_vec());
        {
            let b = buffer.get_mut().expect("a new buffer is writable");
            // never earlier than the previous frame: the muxer refuses timestamps going back
            let pts = (((frame.media_time_s() - first).max(0.0) * 1e9).round() as u64).max(self.frames * self.step_ns);
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_duration(gst::ClockTime::from_nseconds(self.step_ns));
        }
        self.src.push_buffer(buffer).map_err(|e| self.failure(format!("{e:?}")))?;
        self.frames += 1;
        Ok(())
    }

    /// Ends the clip and waits until it is written; returns the number of frames.
    pub fn finish(self) -> Result<u64, String> {
        self.src.end_of_stream().map_err(|e| self.failure(format!("{e:?}")))?;
        let bus = self.pipeline.bus().expect("a pipeline has a bus");
        let result = match bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(600), &[gst::MessageType::Eos, gst::MessageType::Error])
        {
            Some(m) => match m.view() {
                gst::MessageView::Error(e) => Err(format!("writing {} failed: {}", self.path.display(), e.error())),
                _ => Ok(self.frames),
            },
            None => Err(format!("writing {} did not finish within 10 minutes", self.path.display())),
        };
        let _ = self.pipeline.set_state(gst::State::Null);
        result
    }

    /// The pipeline's own error, when it has one, rather than the flow return.
    fn failure(&self, flow: String) -> String {
        let bus = self.pipeline.bus().expect("a pipeline has a bus");
        while let Some(m) = bus.pop() {
            if let gst::MessageView::Error(e) = m.view() {
                return format!("writing {} failed: {}", self.path.display(), e.error());
            }
        }
        format!("writing {} failed: {flow}", self.path.display())
    }
}

impl Drop for ClipWriter {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
