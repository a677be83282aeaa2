//! The static mask stage on real GStreamer pipelines: every path passes it (graph walk), and it
//! fills exactly the pixels its polygons touch, plane by plane, before any encoder.

use std::path::PathBuf;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSink;
use gstreamer_video::prelude::*;

use vakt_core::geometry::{Polygon, Raster};
use vakt_core::source::SourceSpec;
use vakt_media::capture::{CaptureConfig, Pacing, Recovery, build_pipeline};
use vakt_media::mask::StaticMask;

fn demo_clip() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let p = root.join(".data/vtest.avi");
    assert!(p.is_file(), "{} missing: run deploy/fetch-demo-clip.sh", p.display());
    p
}

fn polygons() -> Vec<Polygon> {
    vec![
        // an oblique quadrilateral with edges between pixel centres
        Polygon::new(vec![[0.103, 0.117], [0.431, 0.081], [0.377, 0.493], [0.151, 0.402]]).unwrap(),
        Polygon::new(vec![[0.61, 0.55], [0.97, 0.71], [0.66, 0.93]]).unwrap(),
    ]
}

/// An offline capture of `source` with these masks, at this analysis width.
fn offline(source: SourceSpec, privacy: Vec<Polygon>, analysis_width: u32, colour: bool) -> CaptureConfig {
    CaptureConfig {
        source,
        privacy,
        analysis_width,
        colour,
        full_frames: false,
        pacing: Pacing::Offline,
        recovery: Recovery::Stop,
        loop_stored: false,
        stall_timeout: std::time::Duration::from_secs(5),
        queue: 2,
        camera_element: "v4l2src".into(),
    }
}

/// Pulls one sample from an appsink after starting the pipeline.
fn first_sample(pipeline: &gst::Pipeline, sink: &AppSink) -> gst::Sample {
    pipeline.set_state(gst::State::Playing).expect("pipeline plays");
    sink.try_pull_sample(gst::ClockTime::from_seconds(10)).expect("a frame within 10 s")
}

#[test]
fn every_path_from_the_decoder_passes_the_mask() {
    let cfg = offline(SourceSpec::File { path: demo_clip() }, polygons(), 320, false);
    let built = build_pipeline(&cfg).unwrap();
    // decodebin builds its insides (demuxer, decoder) only once data flows
    let _ = first_sample(&built.pipeline, &built.appsink);
    let report = vakt_media::check_graph(&built.pipeline);
    let decoders = built
        .pipeline
        .iterate_recurse()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.factory().and_then(|f| f.metadata("klass").map(|k| k.contains("Decoder"))).unwrap_or(false))
        .count();
    built.pipeline.set_state(gst::State::Null).unwrap();
    assert!(decoders >= 1, "the walk must see the real decoder");
    assert!(report.masked_paths >= 1, "{report:?}");
    assert!(report.is_safe(), "{report:?}");
}

#[test]
fn a_branch_that_skips_the_mask_is_found() {
    gst::init().unwrap();
    // decoder output teed before the mask: one branch masked, one not
    let p = gst::parse::launch(
        "videotestsrc num-buffers=5 ! jpegenc ! jpegdec name=dec ! tee name=t \
         t. ! queue ! fakesink name=unmasked \
         t. ! queue name=q2",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let mask = StaticMask::new("m", polygons());
    let sink = gst::ElementFactory::make("fakesink").name("masked").build().unwrap();
    p.add_many([mask.upcast_ref(), &sink]).unwrap();
    let q2 = p.by_name("q2").unwrap();
    gst::Element::link_many([&q2, mask.upcast_ref(), &sink]).unwrap();
    let report = vakt_media::check_graph(&p);
    assert_eq!(report.masked_paths, 1, "{report:?}");
    assert_eq!(report.violations.len(), 1, "{report:?}");
    assert!(report.violations[0].starts_with("unmasked <- "), "{report:?}");
    assert!(report.violations[0].ends_with("dec"), "{report:?}");
}

/// Runs `videotestsrc pattern=P` in `format` through the mask (or not) and returns the frame.
fn render(format: &str, pattern: &str, masked: bool) -> (gstreamer_video::VideoInfo, Vec<Vec<u8>>, Vec<usize>) {
    gst::init().unwrap();
    let p = gst::Pipeline::new();
    let src = gst::ElementFactory::make("videotestsrc").property_from_str("pattern", pattern).build().unwrap();
    src.set_property("num-buffers", 1i32);
    let caps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", format)
                .field("width", 97i32)
                .field("height", 61i32)
                .build(),
        )
        .build()
        .unwrap();
    let sink = AppSink::builder().sync(false).build();
    p.add_many([&src, &caps, sink.upcast_ref()]).unwrap();
    src.link(&caps).unwrap();
    if masked {
        let m = StaticMask::new("mask", polygons());
        p.add(&m).unwrap();
        gst::Element::link_many([&caps, m.upcast_ref(), sink.upcast_ref()]).unwrap();
    } else {
        caps.link(&sink).unwrap();
    }
    let sample = first_sample(&p, &sink);
    let info = gstreamer_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let frame = gstreamer_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer().unwrap(), &info).unwrap();
    let planes = (0..frame.n_planes()).map(|i| frame.plane_data(i).unwrap().to_vec()).collect();
    let strides = frame.plane_stride().iter().map(|s| *s as usize).collect();
    p.set_state(gst::State::Null).unwrap();
    (info, planes, strides)
}

#[test]
fn the_fill_is_exact_in_every_plane_and_format() {
    // (format, per-plane fill bytes); odd frame size so chroma rounding is exercised
    let cases: [(&str, &[&[u8]]); 3] =
        [("I420", &[&[16], &[128], &[128]]), ("NV12", &[&[16], &[128, 128]]), ("RGB", &[&[0, 0, 0]])];
    for (format, fills) in cases {
        let (info, masked, strides) = render(format, "smpte", true);
        let (_, reference, _) = render(format, "smpte", false);
        let finfo = info.format_info();
        let (mut inside, mut outside) = (0usize, 0usize);
        for (p, fill) in fills.iter().enumerate() {
            let comp = (0..finfo.n_components()).find(|&c| finfo.plane()[c as usize] == p as u32).unwrap();
            let w = finfo.scale_width(comp as u8, info.width());
            let h = finfo.scale_height(comp as u8, info.height());
            let (sx, sy) = (1u32 << finfo.w_sub()[comp as usize], 1u32 << finfo.h_sub()[comp as usize]);
            // expected, from the definition: a sample is masked when any full-resolution pixel it
            // covers is touched by a polygon
            let luma = Raster::conservative(&polygons(), info.width(), info.height());
            let covered = |x: u32, y: u32| {
                (y * sy..((y + 1) * sy).min(info.height()))
                    .any(|ly| (x * sx..((x + 1) * sx).min(info.width())).any(|lx| luma.contains(lx, ly)))
            };
            let bpp = fill.len();
            for y in 0..h {
                for x in 0..w {
                    let at = y as usize * strides[p] + x as usize * bpp;
                    let got = &masked[p][at..at + bpp];
                    if covered(x, y) {
                        assert_eq!(got, *fill, "{format} plane {p} ({x},{y}) must be filled");
                        inside += 1;
                    } else {
                        assert_eq!(got, &reference[p][at..at + bpp], "{format} plane {p} ({x},{y}) must be untouched");
                        outside += 1;
                    }
                }
            }
        }
        assert!(inside > 500 && outside > 500, "{format}: {inside} filled, {outside} untouched");
    }
}

#[test]
fn colour_frames_carry_the_mask_and_survive_padded_strides() {
    // 640 x 481 red, delivered at width 418: luma stride 420 and chroma stride 212 (209 wide) are
    // padded, and the height is odd; the left third is a privacy mask
    let mask = Polygon::new(vec![[0.0, 0.0], [0.33, 0.0], [0.33, 1.0], [0.0, 1.0]]).unwrap();
    let source = SourceSpec::TestPattern { pattern: "red".into(), width: 640, height: 481, fps: 25 };
    let mut capture = vakt_media::Capture::start(offline(source, vec![mask], 418, true)).unwrap();
    let frame = loop {
        match capture.receiver().recv_timeout(std::time::Duration::from_secs(10)).expect("a frame within 10 s") {
            vakt_media::CaptureMsg::Frame(f) => break f,
            vakt_media::CaptureMsg::Failed(e) => panic!("{e}"),
            _ => {}
        }
    };
    capture.stop();
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    assert_eq!(w, 418);
    assert!((313..=315).contains(&h), "height {h}");
    assert_eq!(frame.data().len(), w * h);
    assert!(frame.has_colour());
    let bgr = frame.bgr().unwrap();
    assert_eq!(bgr.len(), w * h * 3);
    let px = |x: usize, y: usize| &bgr[(y * w + x) * 3..(y * w + x) * 3 + 3];
    // outside the mask, on every row down to the last (a misread stride shears the picture)
    for y in [0, h / 2, h - 1] {
        for x in [200, 300, w - 1] {
            let p = px(x, y);
            assert!(p[2] > 200 && p[0] < 60 && p[1] < 60, "red expected at ({x}, {y}): {p:?}");
        }
        // inside the mask: the fill, with no colour left
        let p = px(60, y);
        assert!(p.iter().all(|&c| c < 40), "masked pixel at (60, {y}) is {p:?}");
    }
}
