//! YOLOX-nano through tract-onnx on a real frame of PETS09-S2L1 (the demo clip), checked against
//! the MOTChallenge ground truth; and the refusal of a model whose checksum does not match.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{manifest, root};
use vakt_core::detect::{BoxPx, ObjectClass};
use vakt_vision::{BgrFrame, Detector, YoloxParams, YoloxTract};

fn models_dir() -> PathBuf {
    support::models_dir("yolox_nano", "yolox_nano.onnx")
}

fn yolox() -> vakt_core::models::Manifest {
    manifest("yolox_nano")
}

/// Frame `n` (0-based) of the demo clip as packed BGR, decoded by real GStreamer.
fn pets_frame(n: u32) -> Vec<u8> {
    let clip = root().join(".data/vtest.avi");
    assert!(clip.is_file(), "{} missing: run deploy/fetch-demo-clip.sh", clip.display());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frames.bgr");
    let status = Command::new("gst-launch-1.0")
        .args(["-q", "filesrc", &format!("location={}", clip.display()), "!", "decodebin", "!", "videoconvert", "!"])
        .args(["video/x-raw,format=BGR", "!", "identity", &format!("eos-after={}", n + 1), "!"])
        .args(["filesink", &format!("location={}", out.display())])
        .status()
        .unwrap();
    assert!(status.success());
    let all = std::fs::read(out).unwrap();
    let size = 768 * 576 * 3;
    all[n as usize * size..(n as usize + 1) * size].to_vec()
}

#[test]
fn finds_the_people_of_a_pets_frame() {
    let mut det = YoloxTract::load(&models_dir(), &yolox(), YoloxParams::default()).unwrap();
    let data = pets_frame(0);
    let dets = det.detect(&BgrFrame { width: 768, height: 576, data: &data }).unwrap();
    // gt.txt frame 1, conf = 1: the three people fully in view
    let truth = [
        BoxPx::new(499.0, 158.0, 31.03, 75.17),
        BoxPx::new(258.0, 219.0, 32.913, 88.702),
        BoxPx::new(633.0, 242.0, 42.338, 81.074),
    ];
    let people: Vec<_> = dets.iter().filter(|d| d.class == ObjectClass::Person && d.score >= 0.5).collect();
    for t in truth {
        let best = people.iter().map(|d| d.bbox.iou(&t)).fold(0.0f32, f32::max);
        assert!(best >= 0.5, "ground-truth person {t:?} found with IoU {best} only; detections {people:?}");
    }
    assert!(det.name().contains("yolox_nano"));
    // wrong frame size: a clear error, no panic
    let e = det.detect(&BgrFrame { width: 768, height: 576, data: &data[..100] }).unwrap_err().to_string();
    assert!(e.contains("768x576x3"), "{e}");
}

#[test]
fn a_model_with_a_wrong_checksum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = models_dir().join("yolox_nano");
    std::fs::create_dir_all(dir.path().join("yolox_nano")).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join("yolox_nano").join(f.file_name().unwrap())).unwrap();
    }
    let onnx = dir.path().join("yolox_nano/yolox_nano.onnx");
    let mut bytes = std::fs::read(&onnx).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    std::fs::write(&onnx, bytes).unwrap();
    let e = YoloxTract::load(dir.path(), &yolox(), YoloxParams::default()).err().expect("refused").to_string();
    assert!(e.contains("yolox_nano.onnx") && e.contains("damaged or replaced"), "{e}");
    assert!(e.contains("695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"), "{e}");
}
