//! The recording encoder: static-masked full-resolution frames in, H.264 access units out, in
//! memory (`appsrc → encoder → h264parse → appsink`). Nothing touches the file system here: the
//! store seals each unit before it is written (`edge/docs/design/ring-buffer.md`). Recording
//! takes `StaticMaskedFrame`s only, so what is recorded is never below the static-masked level.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::{AppSink, AppSrc};

use crate::privacy::StaticMaskedFrame;

/// One encoded picture.
#[derive(Debug, Clone)]
pub struct EncodedUnit {
    /// The frame's media time, ns.
    pub pts_ns: u64,
    pub duration_ns: u64,
    /// A key frame (IDR, with SPS and PPS in front): a segment may start here.
    pub key: bool,
    /// H.264 byte stream, one access unit.
    pub data: Vec<u8>,
}

pub struct Encoder {
    pipeline: gst::Pipeline,
    src: AppSrc,
    sink: AppSink,
    size: (u32, u32),
    step_ns: u64,
    last_pts: Option<u64>,
    /// PTS of the first frame pushed: encoders may shift their output (x264enc by 1000 hours);
    /// units are put back on the frames' media clock.
    first_in: Option<u64>,
    shift: Option<i128>,
}

impl Encoder {
    /// `element` is the board profile's encoder (`x264enc`, `v4l2h264enc`, ...); a key frame at
    /// least every `key_interval` frames.
    pub fn start(
        element: &str,
        width: u32,
        height: u32,
        frame_rate: Option<(i32, i32)>,
        key_interval: u32,
    ) -> Result<Encoder, String> {
        gst::init().map_err(|e| format!("GStreamer could not start: {e}"))?;
        if !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(format!("the video is {width}x{height}; H.264 recording needs an even width and height"));
        }
        let (num, den) = frame_rate.filter(|(n, d)| *n > 0 && *d > 0).unwrap_or((15, 1));
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", width as i32)
            .field("height", height as i32)
            .field("framerate", gst::Fraction::new(num, den))
            .build();
        let pipeline = gst::Pipeline::with_name("vakt-record");
        let src = AppSrc::builder().name("static-masked").caps(&caps).format(gst::Format::Time).block(false).build();
        let make = |factory: &str| {
            gst::ElementFactory::make(factory).build().map_err(|_| {
                format!("GStreamer element {factory:?} is missing: the board profile's recording encoder (run `vakt doctor`)")
            })
        };
        let enc = make(element)?;
        // x264: no B-frames and no look-ahead, so each frame comes out at once with PTS = DTS
        if enc.find_property("tune").is_some() {
            enc.set_property_from_str("tune", "zerolatency");
        }
        if enc.find_property("speed-preset").is_some() {
            enc.set_property_from_str("speed-preset", "superfast");
        }
        if enc.find_property("key-int-max").is_some() {
            enc.set_property("key-int-max", key_interval.max(1));
        }
        let parse = make("h264parse")?;
        // SPS and PPS in front of every key frame: each segment decodes on its own
        parse.set_property("config-interval", -1i32);
        let sink = AppSink::builder()
            .name("encoded")
            .caps(
                &gst::Caps::builder("video/x-h264")
                    .field("stream-format", "byte-stream")
                    .field("alignment", "au")
                    .build(),
            )
            .sync(false)
            .build();
        pipeline.add_many([src.upcast_ref(), &enc, &parse, sink.upcast_ref()]).map_err(|e| e.to_string())?;
        gst::Element::link_many([src.upcast_ref(), &enc, &parse, sink.upcast_ref()]).map_err(|e| e.to_string())?;
        pipeline.set_state(gst::State::Playing).map_err(|e| {
            let _ = pipeline.set_state(gst::State::Null);
            format!("cannot start the recording encoder {element}: {e}")
        })?;
        let step_ns = (1e9 * den as f64 / num as f64).round() as u64;
        Ok(Encoder { pipeline, src, sink, size: (width, height), step_ns, last_pts: None, first_in: None, shift: None })
    }

    pub fn size(&self) -> (u32, u32) {
        self.size
    }

    /// Encodes one frame (colour, at the encoder's size); its media time becomes its PTS.
    pub fn push(&mut self, frame: &StaticMaskedFrame) -> Result<(), String> {
        if (frame.width(), frame.height()) != self.size {
            return Err(format!(
                "frame {} is {}x{}, the recording is {}x{}",
                frame.index(),
                frame.width(),
                frame.height(),
                self.size.0,
                self.size.1
            ));
        }
        let chroma = frame.chroma().ok_or("recording needs colour frames (the full-resolution branch)")?;
        let mut bytes = Vec::with_capacity(frame.data().len() + chroma.len());
        bytes.extend_from_slice(frame.data());
        bytes.extend_from_slice(chroma);
        let mut pts = (frame.media_time_s().max(0.0) * 1e9).round() as u64;
        // strictly increasing: the encoder refuses timestamps that go back
        if let Some(last) = self.last_pts {
            pts = pts.max(last + 1);
        }
        self.last_pts = Some(pts);
        self.first_in.get_or_insert(pts);
        let mut buffer = gst::Buffer::from_mut_slice(bytes);
        {
            let b = buffer.get_mut().expect("a new buffer is writable");
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_duration(gst::ClockTime::from_nseconds(self.step_ns));
        }
        self.src.push_buffer(buffer).map_err(|e| self.failure(format!("{e:?}")))?;
        Ok(())
    }

    /// Encoded units ready now (does not wait).
    pub fn pull(&mut self) -> Vec<EncodedUnit> {
        let mut out = Vec::new();
        while let Some(s) = self.sink.try_pull_sample(gst::ClockTime::ZERO) {
            if let Some(u) = unit(&s) {
                out.push(self.on_media_clock(u));
            }
        }
        out
    }

    /// The first unit is the first frame (no B-frames, no look-ahead): the difference of their
    /// timestamps is the encoder's shift.
    fn on_media_clock(&mut self, mut u: EncodedUnit) -> EncodedUnit {
        let first_in = self.first_in.unwrap_or(0);
        let shift = *self.shift.get_or_insert(u.pts_ns as i128 - first_in as i128);
        u.pts_ns = (u.pts_ns as i128 - shift).max(0) as u64;
        u
    }

    /// Drains the encoder: every unit still inside it.
    pub fn finish(mut self) -> Result<Vec<EncodedUnit>, String> {
        self.src.end_of_stream().map_err(|e| self.failure(format!("{e:?}")))?;
        let mut out = Vec::new();
        while let Some(s) = self.sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
            if let Some(u) = unit(&s) {
                out.push(self.on_media_clock(u));
            }
        }
        let _ = self.pipeline.set_state(gst::State::Null);
        Ok(out)
    }

    fn failure(&self, flow: String) -> String {
        let bus = self.pipeline.bus().expect("a pipeline has a bus");
        while let Some(m) = bus.pop() {
            if let gst::MessageView::Error(e) = m.view() {
                return format!("the recording encoder failed: {}", e.error());
            }
        }
        format!("the recording encoder failed: {flow}")
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn unit(s: &gst::Sample) -> Option<EncodedUnit> {
    let b = s.buffer()?;
    let map = b.map_readable().ok()?;
    Some(EncodedUnit {
        pts_ns: b.pts().map(|t| t.nseconds()).unwrap_or(0),
        duration_ns: b.duration().map(|t| t.nseconds()).unwrap_or(0),
        key: !b.flags().contains(gst::BufferFlags::DELTA_UNIT),
        data: map.as_slice().to_vec(),
    })
}

/// Writes recorded units as a streamable Matroska file (`appsrc → h264parse → matroskamux →
/// filesink`), timestamps kept: how an export hands decrypted footage to the capture pipeline,
/// through a FIFO, so plaintext never reaches a file system.
pub fn write_matroska(path: &std::path::Path, units: &mut dyn Iterator<Item = EncodedUnit>) -> Result<u64, String> {
    gst::init().map_err(|e| format!("GStreamer could not start: {e}"))?;
    let pipeline = gst::Pipeline::with_name("vakt-remux");
    let caps =
        gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream").field("alignment", "au").build();
    let src = AppSrc::builder().caps(&caps).format(gst::Format::Time).block(true).build();
    src.set_max_bytes(8 * 1024 * 1024);
    let make =
        |f: &str| gst::ElementFactory::make(f).build().map_err(|_| format!("GStreamer element {f:?} is missing"));
    let parse = make("h264parse")?;
    let mux = make("matroskamux")?;
    mux.set_property("streamable", true);
    let sink = make("filesink")?;
    sink.set_property("location", path.to_string_lossy().as_ref());
    sink.set_property("sync", false);
    pipeline.add_many([src.upcast_ref(), &parse, &mux, &sink]).map_err(|e| e.to_string())?;
    gst::Element::link_many([src.upcast_ref(), &parse, &mux, &sink]).map_err(|e| e.to_string())?;
    pipeline.set_state(gst::State::Playing).map_err(|e| format!("cannot start the remuxer: {e}"))?;
    let mut n = 0u64;
    let outcome = (|| {
        for u in units {
            let mut b = gst::Buffer::from_mut_slice(u.data);
            {
                let b = b.get_mut().expect("a new buffer is writable");
                b.set_pts(gst::ClockTime::from_nseconds(u.pts_ns));
                b.set_dts(gst::ClockTime::from_nseconds(u.pts_ns));
                if u.duration_ns > 0 {
                    b.set_duration(gst::ClockTime::from_nseconds(u.duration_ns));
                }
                if !u.key {
                    b.set_flags(gst::BufferFlags::DELTA_UNIT);
                }
            }
            src.push_buffer(b).map_err(|e| format!("remuxing failed: {e:?}"))?;
            n += 1;
        }
        src.end_of_stream().map_err(|e| format!("remuxing failed: {e:?}"))?;
        let bus = pipeline.bus().expect("a pipeline has a bus");
        match bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(600), &[gst::MessageType::Eos, gst::MessageType::Error])
        {
            Some(m) => match m.view() {
                gst::MessageView::Error(e) => Err(format!("remuxing failed: {}", e.error())),
                _ => Ok(n),
            },
            None => Err("remuxing did not finish within 10 minutes".to_string()),
        }
    })();
    let _ = pipeline.set_state(gst::State::Null);
    outcome
}
