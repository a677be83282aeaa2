//! Capture: builds the GStreamer pipeline for a source (decode once → static mask → tee →
//! branches), supervises it (reconnect with capped exponential backoff, stall watch, looping of
//! stored clips) and hands static-masked analysis frames to the caller over a bounded channel.
//! Design: `edge/docs/design/privacy-levels.md` (P1) and `edge/docs/design/time.md` (T1–T3).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSink;
use gstreamer_video::prelude::*;

use vakt_core::geometry::Polygon;
use vakt_core::source::SourceSpec;

use crate::graph;
use crate::mask::StaticMask;
use crate::privacy::StaticMaskedFrame;

/// How frames reach analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Live box: stored clips play at their own rate; when analysis is behind, frames are dropped
    /// and counted. The streaming thread never waits.
    Live,
    /// Offline replay: as fast as analysis goes, every decoded frame delivered, nothing dropped.
    Offline,
}

/// What to do when the source fails or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Rebuild the pipeline after a backoff that doubles from 1 s up to `max`.
    Reconnect { max: Duration },
    /// Report the failure and stop (offline replay of a file).
    Stop,
}

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub source: SourceSpec,
    pub privacy: Vec<Polygon>,
    /// Width of the analysis frames; the height keeps the aspect ratio.
    pub analysis_width: u32,
    /// Deliver colour (I420 chroma with the grey plane) for object detection; grey only otherwise.
    pub colour: bool,
    /// Also deliver every frame at full resolution in colour (`CaptureMsg::Full`), from a second
    /// branch of the static-masked tee: the pictures redaction masks for an egress.
    pub full_frames: bool,
    pub pacing: Pacing,
    pub recovery: Recovery,
    /// Replay stored clips from the start when they end.
    pub loop_stored: bool,
    /// No frame for this long counts as a lost signal.
    pub stall_timeout: Duration,
    /// Capacity of the frame channel.
    pub queue: usize,
    /// The element that captures `camera://` sources (from the board profile).
    pub camera_element: String,
}

/// Messages from capture, in order.
#[derive(Debug)]
pub enum CaptureMsg {
    Frame(StaticMaskedFrame),
    /// With `full_frames`: the same frame at full resolution in colour. Its `index` and
    /// `media_time_s` equal those of the analysis `Frame` made from the same picture; the two
    /// branches deliver independently, so either may come first.
    Full(StaticMaskedFrame),
    /// The source stopped delivering frames; `media_time_s` is the last frame's media time.
    SignalLost {
        reason: String,
        media_time_s: f64,
    },
    /// Frames flow again after a loss.
    SignalRestored {
        media_time_s: f64,
    },
    /// A stored clip ended (not looping).
    EndOfStream,
    /// The source cannot be used at all (with `Recovery::Stop`), or the pipeline is unsafe.
    Failed(String),
}

/// Counters shared with the health reporter.
#[derive(Debug, Default)]
pub struct CaptureCounters {
    pub frames_in: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub reconnects: AtomicU64,
    /// Duration of a stored clip in milliseconds, once the pipeline knows it (0: unknown).
    pub duration_ms: AtomicU64,
    /// Supervisor iterations (bus polls and reconnect waits): proof that capture is alive.
    pub beats: AtomicU64,
}

/// A running capture. Dropping it stops the pipeline.
pub struct Capture {
    rx: Receiver<CaptureMsg>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<CaptureCounters>,
}

impl Capture {
    pub fn start(cfg: CaptureConfig) -> Result<Capture, String> {
        gst::init().map_err(|e| format!("GStreamer could not start: {e}"))?;
        let (tx, rx) = crossbeam_channel::bounded(cfg.queue.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(CaptureCounters::default());
        let (s, c) = (stop.clone(), counters.clone());
        let thread = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || supervise(cfg, tx, s, c))
            .map_err(|e| format!("cannot start the capture thread: {e}"))?;
        Ok(Capture { rx, stop, thread: Some(thread), counters })
    }

    pub fn receiver(&self) -> &Receiver<CaptureMsg> {
        &self.rx
    }

    pub fn counters(&self) -> Arc<CaptureCounters> {
        self.counters.clone()
    }

    /// Stops ingest: the pipeline goes to NULL and the thread ends. Frames still queued are
    /// dropped while it stops: with offline pacing the streaming thread may be blocked on a full
    /// channel, and the pipeline cannot reach NULL until it is freed.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            while !t.is_finished() {
                while self.rx.try_recv().is_ok() {}
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = t.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Shared between the streaming thread's callback and the supervisor.
struct Flow {
    last_frame_ms: AtomicU64,
    frames_this_run: AtomicU64,
}

/// Media time that never goes backwards across loops and reconnects (T2).
struct MediaTimeline {
    offset: f64,
    last: Option<f64>,
    step: f64,
    /// Frames delivered over the whole capture (across loops and reconnects).
    frames: u64,
}

impl MediaTimeline {
    /// Media time and 1-based capture-wide index of the next frame.
    fn map(&mut self, pts: Option<f64>, fallback_index: u64) -> (f64, u64) {
        self.frames += 1;
        let raw = pts.unwrap_or(fallback_index as f64 * self.step);
        let mut t = raw + self.offset;
        if let Some(last) = self.last {
            if t <= last {
                // discontinuity (loop, reconnect): continue one frame step after the last frame
                self.offset = last + self.step - raw;
                t = last + self.step;
            } else if t - last < 0.5 {
                self.step = (t - last).max(0.001);
            }
        }
        self.last = Some(t);
        (t, self.frames)
    }
}

fn supervise(cfg: CaptureConfig, tx: Sender<CaptureMsg>, stop: Arc<AtomicBool>, counters: Arc<CaptureCounters>) {
    let epoch = Instant::now();
    let new_timeline =
        || Arc::new(std::sync::Mutex::new(MediaTimeline { offset: 0.0, last: None, step: 1.0 / 25.0, frames: 0 }));
    // the full-resolution branch maps the same timestamps on its own timeline, so its frames get
    // the same media times and numbers as the analysis frames
    let (timeline, full_timeline) = (new_timeline(), new_timeline());
    let mut backoff = Duration::from_secs(1);
    let mut lost = false;
    let mut first = true;
    while !stop.load(Ordering::SeqCst) {
        let flow = Arc::new(Flow { last_frame_ms: AtomicU64::new(0), frames_this_run: AtomicU64::new(0) });
        let timelines = (&timeline, &full_timeline);
        let outcome = run_once(&cfg, &tx, &stop, &counters, &flow, timelines, epoch, &mut lost);
        let last_t = timeline.lock().unwrap().last.unwrap_or(0.0);
        match outcome {
            RunOutcome::Stopped => break,
            RunOutcome::Ended => {
                let _ = tx.send(CaptureMsg::EndOfStream);
                break;
            }
            RunOutcome::Fatal(e) => {
                let _ = tx.send(CaptureMsg::Failed(e));
                break;
            }
            RunOutcome::Lost(reason) => match cfg.recovery {
                Recovery::Stop => {
                    let _ = tx.send(CaptureMsg::Failed(reason));
                    break;
                }
                Recovery::Reconnect { max } => {
                    if flow.frames_this_run.load(Ordering::SeqCst) > 0 {
                        backoff = Duration::from_secs(1);
                    }
                    if !lost || first {
                        lost = true;
                        let _ = tx.send(CaptureMsg::SignalLost { reason: reason.clone(), media_time_s: last_t });
                    }
                    tracing::warn!(%reason, retry_in = ?backoff, "camera signal lost; reconnecting");
                    counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    let until = Instant::now() + backoff;
                    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                        counters.beats.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    backoff = (backoff * 2).min(max);
                }
            },
        }
        first = false;
    }
}

enum RunOutcome {
    Stopped,
    Ended,
    Lost(String),
    Fatal(String),
}

#[allow(clippy::too_many_arguments)]
fn run_once(
    cfg: &CaptureConfig,
    tx: &Sender<CaptureMsg>,
    stop: &AtomicBool,
    counters: &Arc<CaptureCounters>,
    flow: &Arc<Flow>,
    (timeline, full_timeline): (&Arc<std::sync::Mutex<MediaTimeline>>, &Arc<std::sync::Mutex<MediaTimeline>>),
    epoch: Instant,
    lost: &mut bool,
) -> RunOutcome {
    // a FIFO is accepted: `vakt export` hands decrypted footage over one, never to a file
    if let SourceSpec::File { path } = &cfg.source
        && !path.is_file()
        && !std::fs::metadata(path).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()))
    {
        // A clip that is not there (yet): a lost signal, retried like a camera that is down.
        return RunOutcome::Lost(format!("cannot open {}: no such file", path.display()));
    }
    let built = match build_pipeline(cfg) {
        Ok(b) => b,
        Err(e) => return RunOutcome::Fatal(e),
    };
    let Built { pipeline, appsink, full_sink } = built;
    install_callback(cfg, &appsink, tx.clone(), counters.clone(), flow.clone(), timeline.clone(), epoch);
    if let Some(sink) = &full_sink {
        install_full_callback(cfg, sink, tx.clone(), full_timeline.clone());
    }
    let bus = pipeline.bus().expect("a pipeline has a bus");
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        let reason = bus_error(&bus).unwrap_or_else(|| format!("cannot start the pipeline: {e}"));
        let _ = pipeline.set_state(gst::State::Null);
        return RunOutcome::Lost(reason);
    }
    let started = Instant::now();
    let mut graph_checked = false;
    let outcome = loop {
        if stop.load(Ordering::SeqCst) {
            break RunOutcome::Stopped;
        }
        counters.beats.fetch_add(1, Ordering::Relaxed);
        let frames = flow.frames_this_run.load(Ordering::SeqCst);
        if frames > 0 {
            if *lost {
                *lost = false;
                let t = timeline.lock().unwrap().last.unwrap_or(0.0);
                if tx.send(CaptureMsg::SignalRestored { media_time_s: t }).is_err() {
                    break RunOutcome::Stopped;
                }
            }
            if counters.duration_ms.load(Ordering::Relaxed) == 0
                && cfg.source.is_stored()
                && let Some(d) = pipeline.query_duration::<gst::ClockTime>()
            {
                counters.duration_ms.store(d.mseconds().max(1), Ordering::Relaxed);
            }
            if !graph_checked {
                // P1 at run time: once decodebin has built its insides, prove the graph safe.
                graph_checked = true;
                let report = graph::check(&pipeline);
                if !report.is_safe() {
                    break RunOutcome::Fatal(format!(
                        "unsafe pipeline, refusing to run: {}",
                        report.violations.join("; ")
                    ));
                }
                tracing::debug!(
                    masked_paths = report.masked_paths,
                    "pipeline graph checked: every path passes the mask"
                );
            }
        }
        // Stall watch (live only: offline replay is paced by analysis).
        if cfg.pacing == Pacing::Live {
            let last_ms = flow.last_frame_ms.load(Ordering::SeqCst);
            let since = if frames == 0 {
                started.elapsed()
            } else {
                epoch.elapsed().saturating_sub(Duration::from_millis(last_ms))
            };
            if since > cfg.stall_timeout.max(if frames == 0 { Duration::from_secs(10) } else { Duration::ZERO }) {
                break RunOutcome::Lost(format!("no frame for {:.1} s", since.as_secs_f64()));
            }
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else { continue };
        use gst::MessageView;
        match msg.view() {
            MessageView::Eos(_) => {
                if cfg.source.is_stored() && cfg.loop_stored {
                    if pipeline
                        .seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT, gst::ClockTime::ZERO)
                        .is_err()
                    {
                        break RunOutcome::Lost("the clip ended and could not be rewound".into());
                    }
                } else if cfg.source.is_stored() {
                    break RunOutcome::Ended;
                } else {
                    break RunOutcome::Lost("the stream ended".into());
                }
            }
            MessageView::Error(e) => {
                let src = e.src().map(|s| s.path_string().to_string()).unwrap_or_default();
                let mut reason = format!("{} ({src})", e.error());
                if let Some(d) = e.debug() {
                    tracing::debug!(debug = %d, "GStreamer error detail");
                }
                if frames == 0 && cfg.source.is_stored() {
                    reason = format!("cannot decode {}: {}", describe(&cfg.source), e.error());
                }
                break RunOutcome::Lost(reason);
            }
            _ => {}
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    outcome
}

fn bus_error(bus: &gst::Bus) -> Option<String> {
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Error(e) = msg.view() {
            return Some(e.error().to_string());
        }
    }
    None
}

fn describe(s: &SourceSpec) -> String {
    match s {
        SourceSpec::File { path } => path.display().to_string(),
        SourceSpec::ImageSequence { pattern, .. } => pattern.display().to_string(),
        SourceSpec::Rtsp { url } => url.clone(),
        SourceSpec::V4l2 { device } => device.display().to_string(),
        SourceSpec::Camera { name } => format!("camera://{name}"),
        SourceSpec::TestPattern { pattern, .. } => format!("test://{pattern}"),
    }
}

/// A `StaticMaskedFrame` from a sample of one of the capture's sinks, both downstream of the mask
/// (P5): the luma plane, the chroma planes when `colour`, numbered and timed on `timeline`.
/// `source_size` is the full resolution it was scaled from (`None`: not scaled).
fn frame_from_sample(
    sample: &gst::Sample,
    colour: bool,
    timeline: &std::sync::Mutex<MediaTimeline>,
    index: u64,
    source_size: Option<(u32, u32)>,
) -> Result<StaticMaskedFrame, gst::FlowError> {
    let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
        return Err(gst::FlowError::Error);
    };
    let info = gstreamer_video::VideoInfo::from_caps(caps).map_err(|_| gst::FlowError::NotNegotiated)?;
    let frame =
        gstreamer_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info).map_err(|_| gst::FlowError::Error)?;
    let (w, h) = (info.width(), info.height());
    let data = packed_plane(&frame, 0, w as usize, h as usize)?;
    let pts = buffer.pts().map(|t| t.nseconds() as f64 / 1e9);
    let (media_time_s, frame_number) = timeline.lock().unwrap().map(pts, index);
    let mut f = StaticMaskedFrame::new(data, w, h, source_size.unwrap_or((w, h)), media_time_s, frame_number)
        .with_frame_rate(frame_rate(&info));
    if colour {
        let (cw, ch) = ((w as usize).div_ceil(2), (h as usize).div_ceil(2));
        let mut c = packed_plane(&frame, 1, cw, ch)?;
        c.extend_from_slice(&packed_plane(&frame, 2, cw, ch)?);
        let full = info.colorimetry().range() == gstreamer_video::VideoColorRange::Range0_255;
        f = f.with_chroma(c, full);
    }
    Ok(f)
}

fn install_callback(
    cfg: &CaptureConfig,
    appsink: &AppSink,
    tx: Sender<CaptureMsg>,
    counters: Arc<CaptureCounters>,
    flow: Arc<Flow>,
    timeline: Arc<std::sync::Mutex<MediaTimeline>>,
    epoch: Instant,
) {
    let pacing = cfg.pacing;
    let colour = cfg.colour;
    let mut index: u64 = 0;
    appsink.set_callbacks(
        gstreamer_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let f = frame_from_sample(&sample, colour, &timeline, index, Some(source_size(sink)))?;
                index += 1;
                counters.frames_in.fetch_add(1, Ordering::Relaxed);
                flow.last_frame_ms.store(epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
                flow.frames_this_run.fetch_add(1, Ordering::SeqCst);
                if !deliver(pacing, &tx, CaptureMsg::Frame(f))? {
                    counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// The full-resolution branch: every frame in colour, numbered and timed like the analysis
/// frames. It does not feed the stall watch or the counters (the analysis branch does). With live
/// pacing a frame is dropped when the channel is full, so a consumer must pair frames by number.
fn install_full_callback(
    cfg: &CaptureConfig,
    appsink: &AppSink,
    tx: Sender<CaptureMsg>,
    timeline: Arc<std::sync::Mutex<MediaTimeline>>,
) {
    let pacing = cfg.pacing;
    let mut index: u64 = 0;
    appsink.set_callbacks(
        gstreamer_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let f = frame_from_sample(&sample, true, &timeline, index, None)?;
                index += 1;
                // a dropped full frame is not counted: the analysis branch's count is the health figure
                deliver(pacing, &tx, CaptureMsg::Full(f))?;
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// Sends a frame to the consumer: live pacing drops it when the channel is full (returns
/// `false`), offline pacing waits. A closed channel stops the pipeline.
fn deliver(pacing: Pacing, tx: &Sender<CaptureMsg>, msg: CaptureMsg) -> Result<bool, gst::FlowError> {
    match pacing {
        Pacing::Live => match tx.try_send(msg) {
            Ok(()) => Ok(true),
            Err(TrySendError::Full(_)) => Ok(false),
            Err(TrySendError::Disconnected(_)) => Err(gst::FlowError::Flushing),
        },
        Pacing::Offline => tx.send(msg).map(|()| true).map_err(|_| gst::FlowError::Flushing),
    }
}

/// The frame rate the caps state, if they state one (not 0/1, "variable").
fn frame_rate(info: &gstreamer_video::VideoInfo) -> Option<(i32, i32)> {
    let f = info.fps();
    (f.numer() > 0 && f.denom() > 0).then(|| (f.numer(), f.denom()))
}

/// Plane `plane` of a mapped frame, `width × height` bytes with the row padding removed.
fn packed_plane(
    frame: &gstreamer_video::VideoFrameRef<&gst::BufferRef>,
    plane: u32,
    width: usize,
    height: usize,
) -> Result<Vec<u8>, gst::FlowError> {
    let stride = frame.plane_stride()[plane as usize] as usize;
    let src = frame.plane_data(plane).map_err(|_| gst::FlowError::Error)?;
    if stride < width || src.len() < stride * (height.max(1) - 1) + width {
        return Err(gst::FlowError::Error);
    }
    let mut data = Vec::with_capacity(width * height);
    for row in 0..height {
        data.extend_from_slice(&src[row * stride..row * stride + width]);
    }
    Ok(data)
}

/// The full-resolution size of the frames entering the mask stage.
fn source_size(sink: &AppSink) -> (u32, u32) {
    let Some(pipeline) = sink.parent().and_downcast::<gst::Pipeline>() else { return (0, 0) };
    let Some(mask) = pipeline.by_name("privacy-static-mask") else { return (0, 0) };
    let Some(pad) = mask.static_pad("src") else { return (0, 0) };
    pad.current_caps()
        .and_then(|c| gstreamer_video::VideoInfo::from_caps(&c).ok())
        .map(|i| (i.width(), i.height()))
        .unwrap_or((0, 0))
}

/// A built, not yet started, capture pipeline.
pub struct Built {
    pub pipeline: gst::Pipeline,
    pub appsink: AppSink,
    /// The full-resolution branch's sink, with `full_frames`.
    pub full_sink: Option<AppSink>,
}

fn make(factory: &str, name: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory).name(name).build().map_err(|_| {
        format!("GStreamer element {factory:?} is missing; install the GStreamer plugins (deploy/setup-dev.sh)")
    })
}

/// decode → convert → mask → tee → [analysis branch, full-resolution branch]. Every later branch
/// (recording, snapshots) is added to the tee, downstream of the mask (P1).
pub fn build_pipeline(cfg: &CaptureConfig) -> Result<Built, String> {
    gst::init().map_err(|e| format!("GStreamer could not start: {e}"))?;
    let pipeline = gst::Pipeline::with_name("vakt-capture");
    let convert = make("videoconvert", "decode-convert")?;
    let format = make("capsfilter", "decode-format")?;
    format.set_property("caps", gst::Caps::builder("video/x-raw").field("format", "I420").build());
    let mask = StaticMask::new("privacy-static-mask", cfg.privacy.clone());
    let tee = make("tee", "static-masked")?;
    let queue = make("queue", "analysis-queue")?;
    queue.set_property("max-size-buffers", 4u32);
    queue.set_property("max-size-time", 0u64);
    queue.set_property("max-size-bytes", 0u32);
    let scale = make("videoscale", "analysis-scale")?;
    let aconv = make("videoconvert", "analysis-convert")?;
    let acaps = make("capsfilter", "analysis-format")?;
    acaps.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", if cfg.colour { "I420" } else { "GRAY8" })
            .field("width", cfg.analysis_width as i32)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    );
    let appsink = AppSink::builder()
        .name("analysis-sink")
        .sync(cfg.pacing == Pacing::Live && cfg.source.is_stored())
        .max_buffers(1)
        .build();
    pipeline
        .add_many([&convert, &format, mask.upcast_ref(), &tee, &queue, &scale, &aconv, &acaps, appsink.upcast_ref()])
        .map_err(|e| e.to_string())?;
    gst::Element::link_many([&convert, &format, mask.upcast_ref(), &tee]).map_err(|e| e.to_string())?;
    gst::Element::link_many([&queue, &scale, &aconv, &acaps, appsink.upcast_ref()]).map_err(|e| e.to_string())?;
    let tee_pad = tee.request_pad_simple("src_%u").ok_or("tee gave no pad")?;
    tee_pad
        .link(&queue.static_pad("sink").ok_or("queue has no sink pad")?)
        .map_err(|e| format!("cannot link the analysis branch: {e:?}"))?;

    let full_sink = if cfg.full_frames {
        let queue = make("queue", "redaction-queue")?;
        queue.set_property("max-size-buffers", 4u32);
        queue.set_property("max-size-time", 0u64);
        queue.set_property("max-size-bytes", 0u32);
        let sink = AppSink::builder()
            .name("redaction-sink")
            .caps(&gst::Caps::builder("video/x-raw").field("format", "I420").build())
            .sync(cfg.pacing == Pacing::Live && cfg.source.is_stored())
            .max_buffers(1)
            .build();
        pipeline.add_many([&queue, sink.upcast_ref()]).map_err(|e| e.to_string())?;
        queue.link(&sink).map_err(|e| e.to_string())?;
        let pad = tee.request_pad_simple("src_%u").ok_or("tee gave no pad")?;
        pad.link(&queue.static_pad("sink").ok_or("queue has no sink pad")?)
            .map_err(|e| format!("cannot link the redaction branch: {e:?}"))?;
        Some(sink)
    } else {
        None
    };

    let decoded_sink = convert.static_pad("sink").ok_or("videoconvert has no sink pad")?;
    add_source(&pipeline, &cfg.source, &cfg.camera_element, decoded_sink)?;
    Ok(Built { pipeline, appsink, full_sink })
}

/// Adds the source part and links its decoded video to `decoded_sink`. Decoding happens once.
fn add_source(
    pipeline: &gst::Pipeline,
    spec: &SourceSpec,
    camera_element: &str,
    decoded_sink: gst::Pad,
) -> Result<(), String> {
    let decodebin = |name: &str| -> Result<gst::Element, String> {
        let d = make("decodebin", name)?;
        link_video_pads(&d, decoded_sink.clone());
        Ok(d)
    };
    match spec {
        SourceSpec::TestPattern { pattern, width, height, fps } => {
            let src = make("videotestsrc", "source")?;
            src.set_property_from_str("pattern", pattern);
            src.set_property("is-live", true);
            let caps = make("capsfilter", "source-caps")?;
            caps.set_property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("width", *width as i32)
                    .field("height", *height as i32)
                    .field("framerate", gst::Fraction::new(*fps as i32, 1))
                    .build(),
            );
            pipeline.add_many([&src, &caps]).map_err(|e| e.to_string())?;
            src.link(&caps).map_err(|e| e.to_string())?;
            caps.static_pad("src").unwrap().link(&decoded_sink).map_err(|e| format!("{e:?}"))?;
        }
        SourceSpec::File { path } => {
            let src = make("filesrc", "source")?;
            src.set_property("location", path.to_string_lossy().as_ref());
            let dec = decodebin("decoder")?;
            pipeline.add_many([&src, &dec]).map_err(|e| e.to_string())?;
            src.link(&dec).map_err(|e| e.to_string())?;
        }
        SourceSpec::ImageSequence { pattern, start_index } => {
            let src = make("imagesequencesrc", "source")?;
            src.set_property("location", pattern.to_string_lossy().as_ref());
            src.set_property("start-index", *start_index as i32);
            src.set_property("framerate", gst::Fraction::new(25, 1));
            let dec = decodebin("decoder")?;
            pipeline.add_many([&src, &dec]).map_err(|e| e.to_string())?;
            src.link(&dec).map_err(|e| e.to_string())?;
        }
        SourceSpec::V4l2 { device } => {
            let src = make("v4l2src", "source")?;
            src.set_property("device", device.to_string_lossy().as_ref());
            let dec = decodebin("decoder")?;
            pipeline.add_many([&src, &dec]).map_err(|e| e.to_string())?;
            src.link(&dec).map_err(|e| e.to_string())?;
        }
        SourceSpec::Camera { name } => {
            let src = gst::ElementFactory::make(camera_element).name("source").build().map_err(|_| {
                format!(
                    "the board's camera element {camera_element:?} is missing; install the packages the board profile lists (gstreamer.camera_packages)"
                )
            })?;
            set_camera_name(&src, name)?;
            let dec = decodebin("decoder")?;
            pipeline.add_many([&src, &dec]).map_err(|e| e.to_string())?;
            src.link(&dec).map_err(|e| e.to_string())?;
        }
        SourceSpec::Rtsp { url } => {
            let dec = make("uridecodebin", "decoder")?;
            dec.set_property("uri", url);
            dec.connect("source-setup", false, |args| {
                if let Some(src) = args[1].get::<gst::Element>().ok().filter(|s| s.find_property("latency").is_some()) {
                    src.set_property("latency", 200u32);
                }
                None
            });
            link_video_pads(&dec, decoded_sink.clone());
            pipeline.add(&dec).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Points a camera element at the camera `name` names: a V4L2 device, a libcamera camera name or
/// an Argus sensor id, whichever property the element has. An empty name keeps its default camera.
fn set_camera_name(src: &gst::Element, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Ok(());
    }
    let element = src.factory().map(|f| f.name().to_string()).unwrap_or_default();
    if name.starts_with("/dev/") {
        if src.find_property("device").is_none() {
            return Err(format!(
                "camera://{name}: the board's camera element {element} takes camera names, not device paths; use camera:// or v4l2://{name}"
            ));
        }
        src.set_property("device", name);
    } else if src.find_property("camera-name").is_some() {
        src.set_property("camera-name", name);
    } else if src.find_property("sensor-id").is_some() {
        let id: i32 = name.parse().map_err(|_| format!("camera://{name}: {element} takes a sensor id (0, 1, ...)"))?;
        src.set_property("sensor-id", id);
    } else {
        return Err(format!("camera://{name}: the camera element {element} takes no camera name; use camera://"));
    }
    Ok(())
}

/// Links the first raw-video pad a decodebin exposes; other streams (audio) stay unlinked.
fn link_video_pads(decodebin: &gst::Element, sink: gst::Pad) {
    decodebin.connect_pad_added(move |_, pad| {
        let is_video = pad
            .current_caps()
            .or_else(|| Some(pad.query_caps(None)))
            .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/")))
            .unwrap_or(false);
        if is_video
            && !sink.is_linked()
            && let Err(e) = pad.link(&sink)
        {
            tracing::error!(error = ?e, "cannot link decoded video");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_time_is_monotonic_across_loops() {
        let mut tl = MediaTimeline { offset: 0.0, last: None, step: 0.04, frames: 0 };
        let pts = [0.0, 0.04, 0.08, 0.0, 0.04];
        let got: Vec<f64> = pts.iter().enumerate().map(|(i, p)| tl.map(Some(*p), i as u64).0).collect();
        assert_eq!(tl.frames, 5);
        for w in got.windows(2) {
            assert!(w[1] > w[0], "{got:?}");
        }
        assert!((got[3] - 0.12).abs() < 1e-9, "{got:?}");
    }
}
